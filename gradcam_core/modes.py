"""Running a shared model in eval mode without disturbing its owner or other threads."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]

_MODE_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODE_LOCKS_GUARD = threading.Lock()


def _mode_lock(model: nn.Module) -> threading.Lock:
    with _MODE_LOCKS_GUARD:
        return _MODE_LOCKS.setdefault(model, threading.Lock())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode; restore every submodule's ``training`` flag afterwards.

    A model already in eval mode (what ``load_model`` returns) is not touched at all, so concurrent callers
    never wait. Only a model in training mode is switched, under a per-model lock.
    """
    lock = _mode_lock(model)
    if not lock.locked() and not any(m.training for m in model.modules()):
        yield
        return
    with lock:
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield
        finally:
            for module, training in flags:
                module.training = training
