"""The engine's hooks act in their own thread only, and a model copy can tell them from its owner's hooks."""

from __future__ import annotations

import threading

import torch
from torch import nn

from gradcam_core.hooks import forward_hook, is_engine_hook


def test_engine_hook_acts_in_the_registering_thread_only() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    seen: list[str] = []
    handle = forward_hook(model[0], lambda module, args, output: seen.append(threading.current_thread().name))
    try:
        model(torch.zeros(1, 2))
        other = threading.Thread(target=lambda: model(torch.zeros(1, 2)), name="other")
        other.start()
        other.join()
    finally:
        handle.remove()
    assert seen == [threading.current_thread().name]
    assert not model[0]._forward_hooks


def test_engine_hooks_are_recognised_by_type_not_by_module_name() -> None:
    model = nn.Linear(2, 2)
    handle = forward_hook(model, lambda module, args, output: None)
    owner = model.register_forward_hook(lambda module, args, output: None)
    try:
        kinds = [is_engine_hook(hook) for hook in model._forward_hooks.values()]
    finally:
        handle.remove()
        owner.remove()
    assert kinds == [True, False]
