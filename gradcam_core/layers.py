"""Target layers: which modules of a model can be explained, and resolving a layer given by name or module."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Permute

from .errors import LayerError
from .hooks import forward_hook, forward_pre_hook
from .layouts import Layout, LayoutTracker, to_map
from .modes import eval_mode

__all__ = [
    "LayerInfo",
    "activated_layer",
    "candidate_layers",
    "last_feature_map",
    "probe_forward",
    "resolve_layer",
    "segmentation_layer",
]

NEGATIVE_SHARE = 0.1
"""Largest share of negative mass (sum of |negative values| / sum of |values|) of an activated layer's output:
0 after a ReLU, a few per cent after SiLU, GELU or Hardswish, about half or more after a batch norm."""


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output is a feature map (2-D, or 3-D for a network on volumes).

    Attributes:
        name: Dotted module name, e.g. ``"layer4"`` or ``"features.29"``.
        kind: The module's class name, e.g. ``"Sequential"``.
        shape: Shape ``(channels, height, width)`` of the output as a feature map, for the probe input;
            ``(channels, depth, height, width)`` for a 3-D network's 5-D output.
        layout: How the output holds that map: ``"nchw"``, ``"nhwc"`` (channels-last, as in Swin),
            ``"tokens"`` (a vision transformer's patch tokens) or ``"sequence"`` (Hugging Face Swin's tokens on
            each stage's grid); see :mod:`gradcam_core.layouts`.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    layout: Layout = "nchw"

    def describe(self) -> str:
        """Human-readable label such as ``layer4 (Sequential) · 2048×7×7`` (``512×2×7×7`` for a 3-D map)."""
        return f"{self.name} ({self.kind}) · {'×'.join(map(str, self.shape))}"

    @property
    def cells(self) -> int:
        """Locations of the map: ``height * width`` (``depth * height * width`` for a 3-D map)."""
        return math.prod(self.shape[1:])


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by dotted name or as a module of ``model``.

    Example: ``resolve_layer(resnet, "layer4")  # ("layer4", Sequential(...))``.

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
    """Modules whose output is a feature map (more than 1×1, or 1×1×1 in 3-D), in the order the forward pass
    produces them.

    Example: ``[info.name for info in candidate_layers(resnet)][-1]  # "layer4"``.

    Channels-first and channels-last 4-D maps count, and so do a vision transformer's tokens, seen as a map on
    the patch grid, a hierarchical transformer's token sequences on their stage's grid, and a 3-D network's 5-D
    channels-first maps (see :mod:`gradcam_core.layouts`). Modules called more than once per forward (a shared
    activation, say) are left out: their output is ambiguous as a target; so are placeholders that only pass, pad
    or permute their input (identity, dropout, padding, permute), and transformer layers after the last
    attention, whose patch tokens never reach the class token. The model is probed with one forward pass without
    gradients, in eval mode.

    Args:
        model: The classifier.
        probe: A sample input batch (``(1, C, D, H, W)`` for a 3-D network), or the ``(height, width)`` of a zero
            image to probe with.
    """
    if not isinstance(probe, Tensor):
        probe = torch.zeros(1, 3, *probe)
    tracker = LayoutTracker(model)
    seen: dict[str, tuple[LayerInfo, int]] = {}

    def observe(name: str, module: nn.Module, output: object) -> None:
        layout = tracker.layout(output)
        if layout is None or name in seen or _is_placeholder(module):
            return
        info = LayerInfo(name, type(module).__name__, tuple(to_map(output, layout, tracker.grid).shape[1:]), layout)
        if info.cells > 1:
            seen[name] = info, tracker.attention_calls

    try:
        calls = probe_forward(model, probe, observe)
    finally:
        tracker.remove()
    return [
        info
        for name, (info, attentions) in seen.items()
        if calls[name] == 1 and (info.layout != "tokens" or attentions < tracker.attention_calls)
    ]


def probe_forward(
    model: nn.Module, probe: Tensor, observe: Callable[[str, nn.Module, object], None] | None = None
) -> dict[str, int]:
    """Run ``probe`` through ``model`` once, in eval mode without gradients, watching every named module.

    Example: ``list(probe_forward(resnet, torch.zeros(1, 3, 224, 224)))[:2]  # ["conv1", "bn1"]``.

    The hooks act in the calling thread only, so other threads may use the model meanwhile, and are removed
    before returning.

    Args:
        model: The model.
        probe: An input batch.
        observe: Called as ``observe(name, module, output)`` each time a module returns.

    Returns:
        How many times each module ran, by dotted name, in the order the modules were first entered.
    """
    calls: dict[str, int] = {}

    def entered(name: str) -> Callable[[nn.Module, object], None]:
        def hook(module: nn.Module, args: object) -> None:
            calls[name] = calls.get(name, 0) + 1

        return hook

    def returned(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            observe(name, module, output)

        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(forward_pre_hook(module, entered(name)))
                if observe is not None:
                    handles.append(forward_hook(module, returned(name)))
        with eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return calls


_PLACEHOLDERS = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad2d,
    nn.ReflectionPad3d,
    nn.ReplicationPad2d,
    nn.ReplicationPad3d,
    Permute,
)


def _is_placeholder(module: nn.Module) -> bool:
    """True for modules whose output is their input, or a padded or permuted copy of it (not worth explaining)."""
    return isinstance(module, _PLACEHOLDERS) or type(module).__name__ == "Identity"


def last_feature_map(layers: Sequence[LayerInfo]) -> str:
    """The last candidate layer that is not a pooling: ``last_feature_map(candidate_layers(model))  # "layer4"``."""
    unpooled = [info.name for info in layers if "Pool" not in info.kind]
    return (unpooled or [info.name for info in layers])[-1]


def segmentation_layer(layers: Sequence[LayerInfo], classes: int) -> str:
    """A segmentation model's default: the last candidate at the smallest spatial size (the deepest encoder or
    backbone map, or its head's hidden map) that is not a map of class scores (``classes`` channels).

    The last feature map of a segmentation network is its class scores, or is followed by a single convolution
    to them: its Grad-CAM only redraws the score map. The deepest map is what the network saw to decide.
    Example: ``segmentation_layer(candidate_layers(fcn), 3)  # "classifier.2"`` (FCN's head, before its 1×1 conv).
    """
    smallest = min(info.cells for info in layers)
    deepest = [info.name for info in layers if info.cells == smallest]
    hidden = [info.name for info in layers if info.name in deepest and info.shape[0] != classes]
    return (hidden or deepest)[-1]


def activated_layer(model: nn.Module, layers: Sequence[LayerInfo], default: str, probe: Tensor) -> str:
    """``default`` if its output is activated (hardly ever negative), else the first later candidate of the same
    spatial size that is; ``default`` when none is.

    Methods whose channel weights are never negative (Score-CAM, Grad-CAM++, LayerCAM) can only show where the
    activations are positive: at a batch-norm output, mostly negative, their maps come out nearly empty. Read
    from the values, not the module types: a block's ReLU may be registered before its last layer (ResNet's
    BasicBlock) or applied as a function. One forward pass of ``probe``.

    Example::

        activated_layer(lite0.model, lite0.layers, "_bn1", torch.randn(1, 3, 224, 224))   # "_head_act"
    """
    names = [info.name for info in layers]
    if default not in names:
        return default
    start = names.index(default)
    size = layers[start].shape[1:]
    later = [info.name for info in layers[start:] if info.shape[1:] == size]
    negative_share: dict[str, float] = {}

    def observe(name: str, module: nn.Module, output: object) -> None:
        if name in later and name not in negative_share and isinstance(output, Tensor):
            total = float(output.abs().sum())
            negative_share[name] = float(output.clamp(max=0).abs().sum()) / total if total else 1.0

    probe_forward(model, probe, observe)
    return next((name for name in later if negative_share.get(name, 1.0) <= NEGATIVE_SHARE), default)
