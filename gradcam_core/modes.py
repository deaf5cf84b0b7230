"""Running a shared model in eval mode without disturbing its owner or other threads."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


class _ModeState:
    """Who is inside :func:`eval_mode` for one model, and the ``training`` flags to restore when the last leaves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: list[tuple[nn.Module, bool]] | None = None


_STATES: weakref.WeakKeyDictionary[nn.Module, _ModeState] = weakref.WeakKeyDictionary()
_STATES_GUARD = threading.Lock()


def _state(model: nn.Module) -> _ModeState:
    with _STATES_GUARD:
        return _STATES.setdefault(model, _ModeState())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode; restore every submodule's ``training`` flag once no caller is inside any more.

    Example: ``with eval_mode(model): logits = model(x)  # dropout off; model.training restored after``.

    Callers of one model share its eval mode: the first to enter a model in training mode switches it to eval,
    the last to leave restores the flags, and nobody restores them while another caller's forward may still be
    running. The lock is held only to enter and leave, never during the block, so callers never wait for each
    other's work, and nesting in one thread is safe. A model already in eval mode (what ``load_model`` returns)
    is never touched.
    """
    state = _state(model)
    with state.lock:
        if state.users == 0:
            flags = [(module, module.training) for module in model.modules()]
            if any(training for _, training in flags):
                model.eval()
                state.saved = flags
        state.users += 1
    try:
        yield
    finally:
        with state.lock:
            state.users -= 1
            if state.users == 0 and state.saved is not None:
                for module, training in state.saved:
                    module.training = training
                state.saved = None
