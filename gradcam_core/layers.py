"""Target layers: which modules of a model can be explained, and resolving a layer given by name or module."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import LayerError
from .modes import eval_mode

__all__ = ["LayerInfo", "candidate_layers", "resolve_layer"]


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output is a 4-D feature map.

    Attributes:
        name: Dotted module name, e.g. ``"layer4"`` or ``"features.29"``.
        kind: The module's class name, e.g. ``"Sequential"``.
        shape: Output shape ``(channels, height, width)`` for the probe input.
    """

    name: str
    kind: str
    shape: tuple[int, int, int]

    def describe(self) -> str:
        """Human-readable label such as ``layer4 (Sequential) · 2048×7×7``."""
        channels, height, width = self.shape
        return f"{self.name} ({self.kind}) · {channels}×{height}×{width}"


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by dotted name or as a module of ``model``.

    Raises:
        LayerError: if the name or module does not belong to the model.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise LayerError("The given layer module is not part of this model.")
    try:
        module = model.get_submodule(layer) if layer else None
    except AttributeError:
        module = None
    if module is None or module is model:
        raise LayerError(f"The model has no layer named {layer!r}; list the candidates with candidate_layers().")
    return layer, module


def candidate_layers(model: nn.Module, probe: Tensor | tuple[int, int] = (224, 224)) -> list[LayerInfo]:
    """Modules whose output is a 4-D feature map (more than 1×1), in the order the forward pass produces them.

    Modules called more than once per forward (a shared activation, say) are left out: their output is
    ambiguous as a target; so are placeholders that only pass or pad their input (identity, dropout, padding). The model is probed with one forward pass without gradients, in eval mode.

    Args:
        model: The classifier.
        probe: A sample input batch, or the ``(height, width)`` of a zero image to probe with.
    """
    if not isinstance(probe, Tensor):
        probe = torch.zeros(1, 3, *probe)
    thread = threading.get_ident()
    seen: dict[str, LayerInfo] = {}
    calls: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if threading.get_ident() != thread:
                return
            calls[name] = calls.get(name, 0) + 1
            if _is_feature_map(output) and name not in seen:
                seen[name] = LayerInfo(name, type(module).__name__, tuple(output.shape[1:]))

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if name and not _is_placeholder(module)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return [info for name, info in seen.items() if calls[name] == 1]


_PLACEHOLDERS = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)


def _is_placeholder(module: nn.Module) -> bool:
    """True for modules whose output is their input, or a padded copy of it (not worth explaining)."""
    return isinstance(module, _PLACEHOLDERS) or type(module).__name__ == "Identity"


def _is_feature_map(output: object) -> bool:
    """A 4-D tensor with more than one spatial location (a 1×1 map has nothing to localise)."""
    return isinstance(output, Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1
