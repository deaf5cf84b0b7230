"""Layer output layouts: how a module's output becomes an ``(N, C, h, w)`` feature map (``(N, C, d, h, w)`` for a
3-D network), and back.

Four layouts are understood, all decided from the model's own modules, never guessed from sizes alone:

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
* ``"sequence"``: a hierarchical transformer's ``(N, h*w, C)`` tokens, no prefix token, row-major over a grid
  that changes from stage to stage (Hugging Face's Swin: 56², 28², 14², 7² for a 224 input). The grid is the
  one the model passes along at run time: a module called as ``module(tokens, (h, w))``, or returning
  ``(tokens, (h, w))``, with ``h*w`` tokens declares it (Swin's stages, blocks and patch embeddings); a module
  called so that returns ``⌈h/2⌉·⌈w/2⌉`` tokens (Swin's patch merging) moves it to that halved grid. From then
  on a 3-D output with the declared batch size and token count is a sequence on that grid; attention windows
  ``(N·windows, window², C)`` have another batch size. A 1-D convolution or pooling (an ``(N, C, L)``
  channels-first output, as the average pooling before Swin's head) ends the grid. A module returning a
  tuple whose first element is such a sequence (Hugging Face's blocks and stages return
  ``(hidden_states, ...)``) is that sequence; the rest of the tuple is passed on as it is. Every token reaches
  the pooled output, so the attention check below does not apply.

MaxViT's window and grid attention runs on partitioned tensors (``WindowPartition`` to ``WindowDepartition``):
those 4-D outputs hold windows, not an image grid, and are not feature maps.

After the transformer's last attention every token is processed on its own and only the class token is read,
so the patch tokens of such layers cannot change the class score: :class:`LayoutTracker` counts attention
calls (``nn.MultiheadAttention``, or any module whose class name ends in ``Attention``, as in Hugging Face and
timm) so that those layers can be told apart.
"""

from __future__ import annotations

import functools
import inspect
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from torchvision.models.maxvit import WindowDepartition, WindowPartition
from torchvision.ops.misc import Permute

from .hooks import forward_hook, forward_pre_hook

__all__ = ["MAX_PREFIX_TOKENS", "Layout", "LayoutTracker", "from_map", "to_map"]

Layout = Literal["nchw", "nhwc", "tokens", "sequence"]

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
        grid: The ``(h, w)`` grid of the tokens or sequence :meth:`layout` found last, to pass to :func:`to_map`;
            until then the patch grid of the model's vision transformer, or ``None`` if it has none.
        attention_calls: Attention modules of the vision transformer entered so far.
    """

    def __init__(self, model: nn.Module) -> None:
        self._channels_last: bool | None = False
        self._partitioned = False
        self._sequence: tuple[int, tuple[int, int]] | None = None  # (batch, grid) of the current token sequence
        self.attention_calls = 0
        self._patch_grid = _patch_grid(model)
        self.grid = self._patch_grid
        modules = list(model.modules())
        self._handles = [
            forward_hook(module, self._on_permute, prepend=True) for module in modules if isinstance(module, Permute)
        ]
        self._handles += [
            forward_hook(module, self._on_partition, prepend=True)
            for module in modules
            if isinstance(module, (WindowPartition, WindowDepartition))
        ]
        self._handles += [
            forward_hook(module, self._on_format, prepend=True)
            for module in modules
            if getattr(module, "output_fmt", None) in ("NCHW", "NHWC")
        ]
        if any(_takes_grid(type(module)) for module in modules):  # only such models pass token grids along
            self._handles += [
                handle
                for module in modules
                if _may_pass_grids(module)
                for handle in (
                    forward_pre_hook(module, self._on_call, prepend=True),
                    forward_hook(module, self._on_return, prepend=True),
                )
            ]
        if self._patch_grid is not None:
            self._handles += [
                forward_pre_hook(module, self._on_attention, prepend=True) for module in modules if _is_attention(module)
            ]

    def layout(self, output: object) -> Layout | None:
        """The layout of a module output produced now, or ``None`` if it is not a feature map; for tokens or a
        sequence, :attr:`grid` becomes their grid."""
        if self._sequence is not None and _is_sequence(output, *self._sequence):
            self.grid = self._sequence[1]
            return "sequence"
        if not isinstance(output, Tensor):
            return None
        if output.ndim == 4:
            if self._partitioned or self._channels_last is None:
                return None
            return "nhwc" if self._channels_last else "nchw"
        if output.ndim == 5:
            return "nchw" if self._channels_last is False and not self._partitioned else None
        if output.ndim == 3 and self._patch_grid is not None:
            prefix = output.shape[1] - self._patch_grid[0] * self._patch_grid[1]
            if 1 <= prefix <= MAX_PREFIX_TOKENS:
                self.grid = self._patch_grid
                return "tokens"
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

    def _on_call(self, module: nn.Module, args: object) -> None:
        self._sequence = _declared_grid(args) or self._sequence

    def _on_return(self, module: nn.Module, args: object, output: object) -> None:
        if isinstance(module, _CHANNELS_FIRST_1D):
            self._sequence = None
        else:
            self._sequence = _declared_grid(output) or _returned_grid(args, output) or self._sequence


def to_map(output: Tensor | tuple, layout: Layout, grid: tuple[int, int] | None) -> Tensor:
    """The ``(N, C, h, w)`` (or ``(N, C, d, h, w)``) feature map of a module output (a view unless tokens, whose
    prefix tokens are dropped; a sequence's tuple gives its first element's map).

    Example: ``to_map(tokens, "tokens", (14, 14)).shape  # (N, 768, 14, 14) from (N, 197, 768)``.
    """
    if layout == "nhwc":
        return output.permute(*_TO_CHANNELS_FIRST)
    if layout in ("tokens", "sequence"):
        tokens = _first(output)
        height, width = grid
        return tokens[:, -height * width :].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)
    return output


def from_map(fmap: Tensor, layout: Layout, output: Tensor | tuple) -> Tensor | tuple:
    """A new tensor laid out like ``output``, made from the map (the inverse of :func:`to_map`).

    Example: ``from_map(to_map(output, "nhwc", None), "nhwc", output).shape == output.shape  # True``.

    Always a copy, so an in-place operation after the layer leaves ``fmap`` intact; a transformer's class
    token (and any other prefix token) is taken from ``output``, detached. A sequence returned in a tuple comes
    back as a tuple holding the new sequence first and ``output``'s other elements.
    """
    if layout == "nhwc":
        return fmap.permute(*_TO_CHANNELS_LAST).clone(memory_format=torch.contiguous_format)
    if layout == "sequence":
        tokens = fmap.flatten(2).transpose(1, 2).clone(memory_format=torch.contiguous_format)
        return (tokens, *output[1:]) if type(output) is tuple else tokens
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


_CHANNELS_FIRST_1D = (nn.Conv1d, nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
"""Modules whose 3-D output is ``(N, C, L)``, channels first: never a token sequence, and the end of its grid."""


@functools.cache
def _takes_grid(kind: type[nn.Module]) -> bool:
    """Whether modules of ``kind`` take a token grid beside their tokens, as Hugging Face's Swin blocks, stages
    and patch merging do (``forward(hidden_states, input_dimensions, ...)``); cached per class."""
    try:
        return "input_dimensions" in inspect.signature(kind.forward).parameters
    except (TypeError, ValueError):
        return False


def _may_pass_grids(module: nn.Module) -> bool:
    """Whether ``module`` can take, return or end a token grid: a 1-D channels-first module, or any module not
    built into ``torch.nn`` (whose layers take and return tensors only)."""
    return isinstance(module, _CHANNELS_FIRST_1D) or not type(module).__module__.startswith("torch.nn.")


def _first(output: object) -> object:
    """A tuple's first element (a Hugging Face block returns ``(hidden_states, ...)``), else ``output``."""
    return output[0] if type(output) is tuple and output else output


def _is_sequence(output: object, batch: int, grid: tuple[int, int]) -> bool:
    """Whether ``output`` (or its tuple's first element) is ``(batch, h*w, C)`` tokens on ``grid``."""
    tokens = _first(output)
    return isinstance(tokens, Tensor) and tokens.ndim == 3 and tuple(tokens.shape[:2]) == (batch, grid[0] * grid[1])


def _declared_grid(values: object) -> tuple[int, tuple[int, int]] | None:
    """``(batch, (h, w))`` when ``values`` (a call's arguments or a return) is ``(tokens, (h, w), ...)`` with
    ``(batch, h*w, C)`` tokens, as Hugging Face's Swin passes them along; else ``None``."""
    if type(values) is not tuple or len(values) < 2:
        return None
    tokens, grid = values[0], values[1]
    if not (isinstance(tokens, Tensor) and tokens.ndim == 3 and type(grid) is tuple and len(grid) == 2):
        return None
    if not all(type(side) is int and side > 0 for side in grid) or tokens.shape[1] != grid[0] * grid[1]:
        return None
    return tokens.shape[0], grid


def _returned_grid(args: object, output: object) -> tuple[int, tuple[int, int]] | None:
    """The grid of what a module called with ``(tokens, (h, w))`` returned: the same grid for as many tokens,
    the halved one ``(⌈h/2⌉, ⌈w/2⌉)`` for that many (Swin's patch merging); else ``None``."""
    called = _declared_grid(args)
    if called is None:
        return None
    batch, (height, width) = called
    for grid in ((height, width), ((height + 1) // 2, (width + 1) // 2)):
        if _is_sequence(output, batch, grid):
            return batch, grid
    return None


def _is_attention(module: nn.Module) -> bool:
    """An attention module: ``nn.MultiheadAttention``, or a class named ``...Attention`` (Hugging Face, timm)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")
