"""Guided backpropagation and Guided Grad-CAM: exact values, agreement with Captum, hygiene, threads, Lite0."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

from gradcam_core import (
    LayerError,
    LoadedModel,
    ModelError,
    TargetError,
    compute_cam,
    explain,
    explain_guided,
    gradient_magnitude,
    gradient_to_rgb,
    guide,
    guided_backprop,
    guided_gradcam,
)
from gradcam_core.preprocess import to_input

from tests.tiny_models import A0, A1, feature_input, gap_linear_model


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def _two_layer(activation: nn.Module) -> nn.Sequential:
    """x (2) -> linear A -> activation -> linear B (2 classes); A and B chosen so every case shows."""
    first, second = nn.Linear(2, 3, bias=False), nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        second.weight.copy_(torch.tensor([[3.0, -2.0, 4.0], [-1.0, 1.0, 1.0]]))
    return nn.Sequential(first, activation, second).eval()


def _plain_gradient(model: nn.Module, x: Tensor, target: int) -> Tensor:
    leaf = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf)[:, target].sum(), leaf)
    return gradient


# --- exact values by hand ---------------------------------------------------------------------------------


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize(
    ("target", "plain", "guided"),
    [
        # Hidden h = A x = [1, 2, -1]. Class 0: dy/dh = [3, -2, 4]; h3 < 0 blocks 4 (as in the plain gradient),
        # and guidance also blocks the negative -2, so dx = A^T [3, 0, 0].
        (0, [3.0, -2.0], [3.0, 0.0]),
        # Class 1: dy/dh = [-1, 1, 1]; guided [0, 1, 0], so dx = A^T [0, 1, 0].
        (1, [-1.0, 1.0], [0.0, 1.0]),
    ],
)
def test_relu_by_hand(inplace: bool, target: int, plain: list[float], guided: list[float]) -> None:
    model = _two_layer(nn.ReLU(inplace=inplace))
    x = torch.tensor([[1.0, 2.0]])
    assert torch.equal(_plain_gradient(model, x, target), torch.tensor([plain]))
    assert torch.equal(guided_backprop(model, x, target), torch.tensor([guided]))


def test_relu6_by_hand() -> None:
    # ReLU6 passes gradients only where 0 < x < 6: -1 and 7 are blocked; guidance also blocks the -1 weight.
    model = nn.Sequential(nn.ReLU6(), nn.Linear(4, 1, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, -1.0]]))
    x = torch.tensor([[-1.0, 3.0, 7.0, 2.0]])
    assert torch.equal(_plain_gradient(model, x, 0), torch.tensor([[0.0, 1.0, 0.0, -1.0]]))
    assert torch.equal(guided_backprop(model, x, 0), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_functional_relu_is_not_guided() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _two_layer(nn.Identity())

        def forward(self, x: Tensor) -> Tensor:
            return self.net[2](torch.relu(self.net[0](x)))

    x = torch.tensor([[1.0, 2.0]])
    assert torch.equal(guided_backprop(Functional().eval(), x, 0), torch.tensor([[3.0, -2.0]]))


def test_guided_gradcam_by_hand() -> None:
    # Identity conv -> in-place ReLU -> GAP -> fc [1, -1]: Grad-CAM weights [1/4, -1/4], so the map is
    # relu((A0 - A1) / 4) = [[0, 0], [1/4, 3/4]]; guided backprop is 1/4 on channel 0 and 0 on channel 1
    # (its gradient -1/4 is negative). The map is already at the input size.
    model = gap_linear_model([[1.0, -1.0]], inplace_relu=True)
    x = feature_input(A0, A1)
    quarter = torch.full((2, 2), 0.25)
    assert torch.equal(guided_backprop(model, x), torch.stack([quarter, torch.zeros(2, 2)])[None])
    cam = torch.tensor([[0.0, 0.0], [0.25, 0.75]])
    assert torch.equal(compute_cam(model, x, "layer")[0], cam)
    assert torch.equal(guided_gradcam(model, x, "layer"), torch.stack([cam / 4, torch.zeros(2, 2)])[None])


def test_batch_images_are_independent() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(3, 3, 64, 64)
    together = guided_backprop(model, x, [1, 2, 3])
    for n, target in enumerate([1, 2, 3]):
        torch.testing.assert_close(together[n : n + 1], guided_backprop(model, x[n : n + 1], target))


def test_default_target_is_top1() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        top = model(x).argmax(dim=1)
    assert torch.equal(guided_backprop(model, x), guided_backprop(model, x, top))
    assert torch.equal(guided_gradcam(model, x, "layer4"), guided_gradcam(model, x, "layer4", top))


# --- agreement with Captum --------------------------------------------------------------------------------

CAPTUM_CASES = [
    ("resnet18", "layer4"),  # one in-place ReLU module reused two or three times per block
    ("vgg11", "features.18"),  # in-place ReLU modules, each used once
    ("densenet121", "features.denseblock4"),  # in-place ReLUs inside dense layers, concatenations
]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=20).eval()


@pytest.mark.parametrize(("name", "layer"), CAPTUM_CASES)
def test_agrees_with_captum(name: str, layer: str) -> None:
    from captum.attr import GuidedBackprop, GuidedGradCam

    model = _model(name)
    x = torch.randn(2, 3, 96, 96)
    targets = [3, 11]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets hooks on ReLUs
        reference_gb = GuidedBackprop(model).attribute(x, target=targets).detach()
        reference_ggc = GuidedGradCam(model, model.get_submodule(layer)).attribute(
            x, target=targets, interpolate_mode="bilinear"
        ).detach()
    ours_gb = guided_backprop(model, x, targets)
    ours_ggc = guided_gradcam(model, x, layer, targets)
    assert reference_gb.abs().max() > 0 and reference_ggc.abs().max() > 0
    torch.testing.assert_close(ours_gb, reference_gb, rtol=1e-5, atol=1e-6 * float(reference_gb.abs().max()))
    torch.testing.assert_close(ours_ggc, reference_ggc, rtol=1e-5, atol=1e-6 * float(reference_ggc.abs().max()))


def test_guided_is_not_the_plain_gradient() -> None:
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    guided, plain = guided_backprop(model, x, 5), _plain_gradient(model, x, 5)
    assert not torch.allclose(guided, plain)
    assert guided.abs().max() > 0


# --- hygiene ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(2, 3, 64, 64)


class _Raise(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("boom")


def test_no_hook_left(resnet: nn.Module, x: Tensor) -> None:
    guided_backprop(resnet, x)
    guided_gradcam(resnet, x, "layer4")
    assert _hook_count(resnet) == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m, x: guided_backprop(m, x, 99), TargetError),
        (lambda m, x: guided_backprop(m, x, [1, 2, 3]), TargetError),
        (lambda m, x: guided_gradcam(m, x, "fc"), LayerError),
        (lambda m, x: guided_backprop(m, torch.randn(1, 5, 64, 64)), RuntimeError),  # wrong channel count
    ],
    ids=["target-range", "target-count", "layer", "forward"],
)
def test_no_hook_left_after_errors(resnet: nn.Module, x: Tensor, call, error) -> None:
    with pytest.raises(error):
        call(resnet, x)
    assert _hook_count(resnet) == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_exception_after_relus_leaves_nothing(enabled: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4), _Raise()).train()
    model[2].eval()
    with torch.set_grad_enabled(enabled):
        with pytest.raises(RuntimeError, match="boom"):
            guided_backprop(model, torch.randn(1, 3, 8, 8))
        assert torch.is_grad_enabled() is enabled
    assert _hook_count(model) == 0
    assert [m.training for m in model] == [True, True, False, True]


def test_not_a_classifier() -> None:
    with pytest.raises(ModelError, match="class scores"):
        guided_backprop(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()).eval(), torch.randn(1, 3, 4, 4))


def test_training_flags_and_buffers_restored(x: Tensor) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    reference = guided_gradcam(model.eval(), x, "layer4", 3)
    model.train()
    model.layer2.eval()
    flags = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    assert torch.equal(guided_gradcam(model, x, "layer4", 3), reference)  # computed in eval mode
    assert {name: m.training for name, m in model.named_modules()} == flags
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_parameters_and_inputs_untouched(x: Tensor) -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    copy = x.clone()
    guided_gradcam(model, x, "layer3")
    assert model.fc.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "fc.weight")
    assert torch.equal(model.conv1.weight.grad, torch.full_like(model.conv1.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "conv1.weight")
    assert not x.requires_grad and x.grad is None and torch.equal(x, copy)


@pytest.mark.parametrize("enabled", [True, False])
def test_grad_mode_restored(resnet: nn.Module, x: Tensor, enabled: bool) -> None:
    with torch.set_grad_enabled(enabled):
        guided_backprop(resnet, x)
        assert torch.is_grad_enabled() is enabled


def test_works_inside_no_grad_and_inference_mode(resnet: nn.Module, x: Tensor) -> None:
    reference = guided_backprop(resnet, x)
    assert not reference.requires_grad
    with torch.no_grad():
        assert torch.equal(guided_backprop(resnet, x), reference)
    with torch.inference_mode():
        inference_x = x.clone()
        assert torch.equal(guided_backprop(resnet, inference_x), reference)


def test_inplace_flags_and_modules_unchanged(resnet: nn.Module, x: Tensor) -> None:
    before = [(name, type(m), getattr(m, "inplace", None)) for name, m in resnet.named_modules()]
    guided_backprop(resnet, x)
    assert [(name, type(m), getattr(m, "inplace", None)) for name, m in resnet.named_modules()] == before


# --- threads ----------------------------------------------------------------------------------------------


def test_threads_sharing_one_model_match_sequential_runs(resnet: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    jobs = [(torch.randn(1, 3, 64, 64, generator=generator), i % 10) for i in range(8)]
    alone = [(guided_backprop(resnet, x, t), guided_gradcam(resnet, x, "layer3", t)) for x, t in jobs]
    start = threading.Barrier(2)

    def run(job: tuple[Tensor, int]) -> tuple[Tensor, Tensor]:
        x, target = job
        try:
            start.wait(timeout=0.5)
        except threading.BrokenBarrierError:
            pass
        return guided_backprop(resnet, x, target), guided_gradcam(resnet, x, "layer3", target)

    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(run, jobs))
    for (expected_gb, expected_ggc), (got_gb, got_ggc) in zip(alone, together, strict=True):
        assert torch.equal(got_gb, expected_gb)
        assert torch.equal(got_ggc, expected_ggc)
    assert _hook_count(resnet) == 0


def test_plain_gradients_in_other_threads_are_not_guided(resnet: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    expected = _plain_gradient(resnet, x, 4)
    stop = threading.Event()

    def guided_loop() -> None:
        while not stop.is_set():
            guided_backprop(resnet, x, 4)

    worker = threading.Thread(target=guided_loop)
    worker.start()
    try:
        plain = [_plain_gradient(resnet, x, 4) for _ in range(10)]
    finally:
        stop.set()
        worker.join()
    for gradient in plain:
        torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-7)


# --- the built-in model and the image-level API ------------------------------------------------------------


def test_lite0_relu6_is_guided(lite0: LoadedModel, assets) -> None:
    result = explain(assets / "chelsea.png", lite0)
    inputs = to_input(result.image, lite0.preprocessing)
    guided = guided_backprop(lite0.model, inputs, result.target.index)
    plain = _plain_gradient(lite0.model, inputs, result.target.index)
    assert guided.shape == inputs.shape and guided.abs().max() > 0
    assert not torch.allclose(guided, plain)  # its ReLU6 modules were guided
    assert _hook_count(lite0.model) == 0


def test_explain_guided_on_lite0(lite0: LoadedModel, assets) -> None:
    guided = explain_guided(assets / "chelsea.png", lite0)  # 451 x 300
    explanation = guided.explanation
    assert explanation.target == explain(assets / "chelsea.png", lite0).target
    assert guided.guided_backprop.shape == guided.guided_gradcam.shape == (300, 451, 3)
    assert guided.guided_backprop.dtype == guided.guided_gradcam.dtype == np.float32
    assert np.abs(guided.guided_gradcam).max() > 0
    np.testing.assert_array_equal(
        guided.guided_gradcam, guided.guided_backprop * explanation.heatmap[:, :, None]
    )
    # Registered on the image: shrunk back to the input's size, it matches the gradient computed there.
    inputs = to_input(explanation.image, lite0.preprocessing)
    at_input = guided_backprop(lite0.model, inputs, explanation.target.index)[0].permute(1, 2, 0).numpy()
    height, width = explanation.input_size
    back = cv2.resize(guided.guided_backprop, (width, height), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(back.ravel(), at_input.ravel())[0, 1] > 0.8
    assert abs(np.corrcoef(back[:, ::-1].ravel(), at_input.ravel())[0, 1]) < 0.2  # not flipped


def test_guide_refuses_another_model(lite0: LoadedModel, assets) -> None:
    explanation = explain(assets / "chelsea.png", lite0)
    other = dataclasses.replace(lite0, name="other_model")
    with pytest.raises(ModelError, match="same model"):
        guide(explanation, other)


# --- rendering --------------------------------------------------------------------------------------------


def test_gradient_to_rgb_centres_zero_on_grey() -> None:
    gradient = np.zeros((2, 3, 3), np.float32)
    assert (gradient_to_rgb(gradient) == 128).all()
    gradient[0, 0] = [1.0, -1.0, 0.5]
    gradient[1, 2] = [100.0, 0.0, 0.0]  # an outlier beyond the percentile is clipped
    rgb = gradient_to_rgb(gradient, percentile=90)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 2, 0] == 255 and rgb[1, 1].tolist() == [128, 128, 128]
    assert rgb[0, 0, 0] > 128 > rgb[0, 0, 1]


def test_gradient_magnitude() -> None:
    gradient = np.zeros((2, 2, 3), np.float32)
    gradient[0, 0] = [0.5, -1.0, 0.0]
    magnitude = gradient_magnitude(gradient, percentile=100)
    assert magnitude.dtype == np.float32
    np.testing.assert_array_equal(magnitude, [[1.0, 0.0], [0.0, 0.0]])
    assert (gradient_magnitude(np.zeros((2, 2, 3), np.float32)) == 0).all()


@pytest.mark.parametrize(
    ("gradient", "percentile", "match"),
    [
        (np.zeros((2, 2), np.float32), 99.0, "shape"),
        (np.zeros((2, 2, 3), np.uint8), 99.0, "float"),
        (np.zeros((2, 2, 3), np.float32), 0.0, "percentile"),
        (np.zeros((2, 2, 3), np.float32), float("nan"), "percentile"),
    ],
)
def test_rendering_errors(gradient: np.ndarray, percentile: float, match: str) -> None:
    for render in (gradient_to_rgb, gradient_magnitude):
        with pytest.raises(ValueError, match=match):
            render(gradient, percentile)
