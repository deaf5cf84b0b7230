"""compute_cam leaves no trace: hooks, modes, parameters' grads, buffers, grad mode, inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

from gradcam_core import LayerError, TargetError, compute_cam


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(2, 3, 64, 64)


def test_no_hook_left_after_success(resnet: nn.Module, x: Tensor) -> None:
    compute_cam(resnet, x, "layer4")
    assert _hook_count(resnet) == 0


@pytest.mark.parametrize(
    ("layer", "targets", "error"),
    [("layer4", 99, TargetError), ("fc", None, LayerError), ("nonexistent", None, LayerError)],
)
def test_no_hook_left_after_errors(resnet: nn.Module, x: Tensor, layer, targets, error) -> None:
    with pytest.raises(error):
        compute_cam(resnet, x, layer, targets)
    assert _hook_count(resnet) == 0


def test_no_hook_left_when_forward_raises(resnet: nn.Module) -> None:
    with pytest.raises(RuntimeError):
        compute_cam(resnet, torch.randn(1, 5, 64, 64), "layer4")  # wrong channel count
    assert _hook_count(resnet) == 0


def test_training_flags_restored_per_module(x: Tensor) -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).train()
    model.layer2.eval()  # a frozen part must stay frozen
    before = {name: m.training for name, m in model.named_modules()}
    compute_cam(model, x, "layer4")
    assert {name: m.training for name, m in model.named_modules()} == before


def test_computed_in_eval_mode_and_buffers_untouched(x: Tensor) -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    reference = compute_cam(model.eval(), x, "layer4")
    model.train()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    in_train_mode = compute_cam(model, x, "layer4")
    assert torch.equal(in_train_mode, reference)  # BatchNorm used its running statistics
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_parameters_untouched(x: Tensor) -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    compute_cam(model, x, "layer3")
    assert model.fc.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "fc.weight")
    assert torch.equal(model.conv1.weight.grad, torch.full_like(model.conv1.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "conv1.weight")


def test_inputs_untouched(resnet: nn.Module, x: Tensor) -> None:
    copy = x.clone()
    compute_cam(resnet, x, "layer4")
    assert not x.requires_grad and x.grad is None and torch.equal(x, copy)


@pytest.mark.parametrize("enabled", [True, False])
def test_grad_mode_restored(resnet: nn.Module, x: Tensor, enabled: bool) -> None:
    with torch.set_grad_enabled(enabled):
        compute_cam(resnet, x, "layer4")
        assert torch.is_grad_enabled() is enabled


def test_works_inside_no_grad_and_inference_mode(resnet: nn.Module, x: Tensor) -> None:
    reference = compute_cam(resnet, x, "layer4")
    with torch.no_grad():
        assert torch.equal(compute_cam(resnet, x, "layer4"), reference)
    with torch.inference_mode():
        inference_x = x.clone()
        assert torch.equal(compute_cam(resnet, inference_x, "layer4"), reference)


def test_densenet_inplace_relu_after_features() -> None:
    # torchvision DenseNet applies F.relu(features, inplace=True) right after the default target layer.
    model = torchvision.models.densenet121(weights=None, num_classes=10).eval()
    cam = compute_cam(model, torch.randn(1, 3, 64, 64), "features", targets=3)
    assert cam.shape == (1, 2, 2) and torch.isfinite(cam).all()
    assert _hook_count(model) == 0


class _CountingIdentity(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        _CountingIdentity.calls += 1
        return grad


class _Probe(nn.Module):
    """Counts its backward calls and records whether autograd recorded its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.grad_mode: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.grad_mode.append(torch.is_grad_enabled())
        return _CountingIdentity.apply(x)


def test_backward_is_partial() -> None:
    """No graph is recorded before the target layer, and only the head is differentiated, once."""
    before, after = _Probe(), _Probe()
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), before, nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1),
        after, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()
    _CountingIdentity.calls = 0
    compute_cam(model, torch.randn(1, 3, 16, 16), "3")
    assert before.grad_mode == [False] and after.grad_mode == [True]
    assert _CountingIdentity.calls == 1  # only the probe after the target layer


def test_shared_module_called_twice_is_refused() -> None:
    act = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 4, 3), act, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(LayerError, match="more than once"):
        compute_cam(model, torch.randn(1, 3, 16, 16), "1")
    assert _hook_count(model) == 0
