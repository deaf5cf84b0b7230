"""The other gradient-based CAM methods: values by hand on tiny models, and agreement with pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from gradcam_core import METHODS, compute_cam, trace_cam
from tests.tiny_models import A0, A1, feature_input, gap_linear_model, squared_sum_model

SQUARES = [[1.0, 4.0], [9.0, 16.0]]  # A0 * A0


def _by_hand(method: str) -> torch.Tensor:
    return compute_cam(squared_sum_model(), feature_input(A0, A1), "layer", targets=0, method=method)[0]


def test_xgradcam_by_hand() -> None:
    # g = A0 on channel 0, 0 on channel 1: w0 = sum(A0 * A0) / sum(A0) = 30 / 10 = 3.
    torch.testing.assert_close(_by_hand("xgradcam"), 3.0 * torch.tensor(A0))


@pytest.mark.parametrize("method", ["hirescam", "layercam"])
def test_elementwise_methods_by_hand(method: str) -> None:
    # sum_k g_k * A_k = A0 * A0 (LayerCAM's ReLU changes nothing: g = A0 > 0).
    torch.testing.assert_close(_by_hand(method), torch.tensor(SQUARES))


def test_gradcam_plus_plus_by_hand() -> None:
    # a_ij = g^2 / (2 g^2 + sum(A0) g^3) = 1 / (2 + 10 a) for g = a = A0_ij; w0 = sum a / (2 + 10 a).
    w0 = 1 / 12 + 2 / 22 + 3 / 32 + 4 / 42
    torch.testing.assert_close(_by_hand("gradcam++"), w0 * torch.tensor(A0))


def test_layercam_drops_negative_gradients_hirescam_keeps_them() -> None:
    model, x = gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, A1)
    layercam = compute_cam(model, x, "layer", 0, method="layercam")[0]
    hirescam = compute_cam(model, x, "layer", 0, method="hirescam")[0]
    torch.testing.assert_close(layercam, 0.25 * torch.tensor(A0))  # ReLU(-0.25) = 0 on channel 1
    torch.testing.assert_close(hirescam, torch.tensor([[0.0, 0.0], [0.25, 0.75]]))


@pytest.mark.parametrize(
    ("method", "peer"),
    [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"),
     ("hirescam", "HiResCAM"), ("layercam", "LayerCAM")],
)
def test_weighting_agrees_with_pytorch_grad_cam(method: str, peer: str) -> None:
    import pytorch_grad_cam

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    with torch.no_grad():
        # pytorch-grad-cam adds eps = 1e-6 to Grad-CAM++'s denominator (2 g^2 + ...); with random weights
        # g^2 is ~1e-6 and that eps alone moves its map by 10%. Larger scores make the eps negligible.
        model.fc.weight.mul_(1e3)
    x = torch.randn(2, 3, 64, 64)
    trace = trace_cam(model, x, "layer3", [1, 7], method=method)
    cam = getattr(pytorch_grad_cam, peer)(model=model, target_layers=[model.layer3])
    try:
        theirs = cam.get_cam_image(
            x, model.layer3, None, trace.activations.numpy(), trace.gradients.numpy(), eigen_smooth=False
        )
    finally:
        cam.activations_and_grads.release()
    np.testing.assert_allclose(trace.weighted_sum.numpy(), theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


def test_every_method_runs_on_a_real_model(lite0, assets) -> None:
    from gradcam_core import explain

    for name in METHODS:
        result = explain(assets / "coffee.png", model=lite0, method=name, target="espresso")
        assert result.method == name and result.heatmap.shape == (400, 600)
        assert np.isfinite(result.heatmap).all()
