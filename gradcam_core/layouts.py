"""Layer output layouts: how a module's output becomes an ``(N, C, h, w)`` feature map (``(N, C, d, h, w)`` for a
3-D network), and back.

Three layouts are understood, all decided from the model's own modules, never guessed from sizes:

* ``"nchw"``: a 4-D channels-first map, the layout of convolutional networks; a 5-D output is a 3-D network's
  channels-first map ``(N, C, d, h, w)`` (MONAI's 3-D networks, torchvision's video ResNets), read the same way.
  The other layouts are 2-D only: a 5-D output inside a permuted region (Swin3D's channels-last blocks) is none.
* ``"nhwc"``: a 4-D channels-last map. torchvision switches to it with a ``Permute([0, 2, 3, 1])`` module and
  back with ``Permute([0, 3, 1, 2])`` (Swin Transformer's stages, ConvNeXt's block internals); a 4-D output is
  channels-last when the last such module that returned before it switched to channels-last. A timm module
  declares its output's layout in ``output_fmt`` (``"NHWC"`` from Swin's patch embedding on), which counts alike.
* ``"tokens"``: a vision transformer's ``(N, k + h*w, D)`` sequence, ``k`` prefix tokens first (1 to
  ``MAX_PREFIX_TOKENS``: the class token, DeiT's distillation token, register tokens), then the patch tokens in
  row-major order over the ``(h, w)`` patch grid. The grid is that of a torchvision ``VisionTransformer``, or
  the one a module declares in a ``patch_grid`` attribute (a Hugging Face ViT wrapped by
  :mod:`gradcam_core.source_huggingface`, say), or a timm vision transformer's (``patch_embed.grid_size`` of
  a module with ``num_prefix_tokens``); a model with none of these has no tokens layout.

MaxViT's window and grid attention runs on partitioned tensors (``WindowPartition`` to ``WindowDepartition``):
those 4-D outputs hold windows, not an image grid, and are not feature maps.

After the transformer's last attention every token is processed on its own and only the class token is read,
so the patch tokens of such layers cannot change the class score: :class:`LayoutTracker` counts attention
calls (``nn.MultiheadAttention``, or any module whose class name ends in ``Attention``, as in Hugging Face and
timm) so that those layers can be told apart.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from torchvision.models.maxvit import WindowDepartition, WindowPartition
from torchvision.ops.misc import Permute

from .hooks import forward_hook, forward_pre_hook

__all__ = ["MAX_PREFIX_TOKENS", "Layout", "LayoutTracker", "from_map", "to_map"]

Layout = Literal["nchw", "nhwc", "tokens"]

MAX_PREFIX_TOKENS = 8
"""Most tokens a vision transformer's sequence may hold before its patch tokens (class, distillation, registers)."""

_TO_CHANNELS_LAST = [0, 2, 3, 1]
_TO_CHANNELS_FIRST = [0, 3, 1, 2]


class LayoutTracker:
    """Follows one forward pass of ``model`` in the registering thread to tell the layout of module outputs.

    Forward hooks run as modules return, so a container's output gets the layout left by its last child.
    Call :meth:`layout` from a forward hook registered after the tracker (its hooks are prepended anyway), and
    :meth:`remove` when done.

    Attributes:
        grid: The patch grid ``(h, w)`` of the model's vision transformer, or ``None`` if it has none.
        attention_calls: Attention modules of the vision transformer entered so far.
    """

    def __init__(self, model: nn.Module) -> None:
        self._channels_last: bool | None = False
        self._partitioned = False
        self.attention_calls = 0
        self.grid = _patch_grid(model)
        self._handles = [
            forward_hook(module, self._on_permute, prepend=True)
            for module in model.modules()
            if isinstance(module, Permute)
        ]
        self._handles += [
            forward_hook(module, self._on_partition, prepend=True)
            for module in model.modules()
            if isinstance(module, (WindowPartition, WindowDepartition))
        ]
        self._handles += [
            forward_hook(module, self._on_format, prepend=True)
            for module in model.modules()
            if getattr(module, "output_fmt", None) in ("NCHW", "NHWC")
        ]
        if self.grid is not None:
            self._handles += [
                forward_pre_hook(module, self._on_attention, prepend=True)
                for module in model.modules()
                if _is_attention(module)
            ]

    def layout(self, output: object) -> Layout | None:
        """The layout of a module output produced now, or ``None`` if it is not a feature map."""
        if not isinstance(output, Tensor):
            return None
        if output.ndim == 4:
            if self._partitioned or self._channels_last is None:
                return None
            return "nhwc" if self._channels_last else "nchw"
        if output.ndim == 5:
            return "nchw" if self._channels_last is False and not self._partitioned else None
        if output.ndim == 3 and self.grid is not None:
            prefix = output.shape[1] - self.grid[0] * self.grid[1]
            return "tokens" if 1 <= prefix <= MAX_PREFIX_TOKENS else None
        return None

    def remove(self) -> None:
        """Remove the tracker's hooks."""
        for handle in self._handles:
            handle.remove()

    def _on_permute(self, module: nn.Module, args: object, output: object) -> None:
        dims = list(module.dims)
        self._channels_last = True if dims == _TO_CHANNELS_LAST else False if dims == _TO_CHANNELS_FIRST else None

    def _on_format(self, module: nn.Module, args: object, output: object) -> None:
        self._channels_last = module.output_fmt == "NHWC"

    def _on_partition(self, module: nn.Module, args: object, output: object) -> None:
        self._partitioned = isinstance(module, WindowPartition)

    def _on_attention(self, module: nn.Module, args: object) -> None:
        self.attention_calls += 1


def to_map(output: Tensor, layout: Layout, grid: tuple[int, int] | None) -> Tensor:
    """The ``(N, C, h, w)`` (or ``(N, C, d, h, w)``) feature map of a module output (a view unless tokens, whose
    prefix tokens are dropped).

    Example: ``to_map(tokens, "tokens", (14, 14)).shape  # (N, 768, 14, 14) from (N, 197, 768)``.
    """
    if layout == "nhwc":
        return output.permute(*_TO_CHANNELS_FIRST)
    if layout == "tokens":
        height, width = grid
        return output[:, -height * width :].transpose(1, 2).reshape(output.shape[0], output.shape[2], height, width)
    return output


def from_map(fmap: Tensor, layout: Layout, output: Tensor) -> Tensor:
    """A new tensor laid out like ``output``, made from the map (the inverse of :func:`to_map`).

    Example: ``from_map(to_map(output, "nhwc", None), "nhwc", output).shape == output.shape  # True``.

    Always a copy, so an in-place operation after the layer leaves ``fmap`` intact; a transformer's class
    token (and any other prefix token) is taken from ``output``, detached.
    """
    if layout == "nhwc":
        return fmap.permute(*_TO_CHANNELS_LAST).clone(memory_format=torch.contiguous_format)
    if layout == "tokens":
        prefix = output.shape[1] - fmap.shape[2] * fmap.shape[3]
        return torch.cat([output[:, :prefix].detach(), fmap.flatten(2).transpose(1, 2)], dim=1)
    return fmap.clone()


def _patch_grid(model: nn.Module) -> tuple[int, int] | None:
    """The patch grid of the first torchvision VisionTransformer in ``model`` (it only takes its image size), or
    the first grid a module declares as ``patch_grid = (h, w)``; ``None`` when there is neither."""
    for module in model.modules():
        if isinstance(module, VisionTransformer):
            side = module.image_size // module.patch_size
            return side, side
        declared = getattr(module, "patch_grid", None) or _timm_patch_grid(module)
        if (
            isinstance(declared, tuple)
            and len(declared) == 2
            and all(type(side) is int and side > 0 for side in declared)
        ):
            return declared
    return None


def _timm_patch_grid(module: nn.Module) -> tuple[int, int] | None:
    """The grid of a timm vision transformer (ViT, DeiT, EVA, BEiT: a token sequence with ``num_prefix_tokens``),
    from its patch embedding's ``grid_size``; ``None`` for any other module."""
    if not isinstance(getattr(module, "num_prefix_tokens", None), int):
        return None
    grid = getattr(getattr(module, "patch_embed", None), "grid_size", None)
    return tuple(grid) if isinstance(grid, (tuple, list)) else None


def _is_attention(module: nn.Module) -> bool:
    """An attention module: ``nn.MultiheadAttention``, or a class named ``...Attention`` (Hugging Face, timm)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")
