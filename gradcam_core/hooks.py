"""The engine's module hooks: registered for one call, acting only in the thread that registered them.

Every module hook the engine registers goes through :func:`forward_hook` or :func:`forward_pre_hook`, so
it is an :class:`EngineHook` that other threads sharing the model never trigger, and that a copy of the model
can leave out (:func:`is_engine_hook`). Example::

    handle = forward_hook(model.layer4, lambda module, args, output: print(output.shape))
    try:
        model(x)
    finally:
        handle.remove()
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["EngineHook", "forward_hook", "forward_pre_hook", "is_engine_hook"]


class EngineHook:
    """A hook that calls ``function`` in the registering thread only (elsewhere it does nothing)."""

    __slots__ = ("function", "thread")

    def __init__(self, function: Callable[..., object]) -> None:
        self.function = function
        self.thread = threading.get_ident()

    def __call__(self, *args: object) -> object:
        if threading.get_ident() != self.thread:
            return None
        return self.function(*args)


def forward_hook(
    module: nn.Module, function: Callable[[nn.Module, object, object], object], *, prepend: bool = False
) -> RemovableHandle:
    """Register ``function(module, args, output)`` as an engine forward hook of ``module`` (remove it when done).

    Example: ``handle = forward_hook(model.layer4, lambda module, args, output: None)``.
    """
    return module.register_forward_hook(EngineHook(function), prepend=prepend)


def forward_pre_hook(
    module: nn.Module, function: Callable[[nn.Module, object], object], *, prepend: bool = False
) -> RemovableHandle:
    """Register ``function(module, args)`` as an engine forward pre-hook of ``module`` (remove it when done).

    Example: ``handle = forward_pre_hook(model.fc, lambda module, args: None)``.
    """
    return module.register_forward_pre_hook(EngineHook(function), prepend=prepend)


def is_engine_hook(hook: object) -> bool:
    """Whether ``hook`` was registered by the engine, e.g. ``is_engine_hook(print)  # False``."""
    return isinstance(hook, EngineHook)
