"""3-D CAM engine: every method on 5-D activations ``(N, K, d, h, w)``, by the same code as in 2-D.

Exact values on a hand-set Conv3d model, agreement with MONAI's own ``GradCAM`` / ``GradCAMpp`` on a seeded 3-D
DenseNet, Score-CAM against a slow loop, guided backpropagation against a hand-written backward pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks import nets
from monai.visualize import GradCAM, GradCAMpp
from torch import Tensor, nn
from torch.nn import functional as F

from gradcam_core.cam import trace_cam
from gradcam_core.guided import guided_backprop, guided_gradcam
from gradcam_core.layers import candidate_layers, last_feature_map
from gradcam_core.methods import METHODS

X = torch.arange(8.0).reshape(1, 1, 2, 2, 2) - 3  # voxels -3 .. 4
W = [[1.0, 2.0], [-1.0, 0.5]]


def hand_model() -> nn.Sequential:
    """Conv3d 1x1x1 (A0 = ReLU(2x + 1), A1 = ReLU(-x + 2)) -> global mean -> Linear(W), no bias."""
    conv = nn.Conv3d(1, 2, 1)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 2.0]))
        fc.weight.copy_(torch.tensor(W))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), fc).eval()


def small_net(seed: int = 0, channels: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()


def test_gradcam_and_layercam_by_hand() -> None:
    # A0 = ReLU(2x + 1) = [0, 0, 0, 1, 3, 5, 7, 9], A1 = ReLU(-x + 2) = [5, 4, 3, 2, 1, 0, 0, 0] on the 8 voxels;
    # the mean over 2x2x2 makes dy^c/dA^k = W[c, k] / 8 at every voxel.
    model = hand_model()
    trace = trace_cam(model, X, "1", 0)
    expected_gradients = torch.tensor([1 / 8, 2 / 8]).reshape(1, 2, 1, 1, 1).expand(1, 2, 2, 2, 2)
    torch.testing.assert_close(trace.gradients, expected_gradients)
    # class 0: (A0 + 2 A1) / 8 = [10, 8, 6, 5, 5, 5, 7, 9] / 8
    expected = torch.tensor([1.25, 1.0, 0.75, 0.625, 0.625, 0.625, 0.875, 1.125]).reshape(1, 2, 2, 2)
    torch.testing.assert_close(trace.cam, expected)
    # class 1: Grad-CAM ReLU((-A0 + A1 / 2) / 8) = [2.5, 2, 1.5, 0, 0...] / 8; LayerCAM drops the negative
    # gradient of channel 0: (A1 / 2) / 8 = [2.5, 2, 1.5, 1, 0.5, 0, 0, 0] / 8.
    gradcam = trace_cam(model, X, "1", 1).cam
    layercam = trace_cam(model, X, "1", 1, "layercam").cam
    torch.testing.assert_close(gradcam, torch.tensor([0.3125, 0.25, 0.1875, 0, 0, 0, 0, 0]).reshape(1, 2, 2, 2))
    expected = torch.tensor([0.3125, 0.25, 0.1875, 0.125, 0.0625, 0, 0, 0]).reshape(1, 2, 2, 2)
    torch.testing.assert_close(layercam, expected)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_5d_activations(method: str) -> None:
    model, x = small_net(), torch.randn(2, 1, 6, 8, 10, generator=torch.Generator().manual_seed(1))
    trace = trace_cam(model, x, "3", [0, 2], method)
    assert trace.cam.shape == (2, 3, 4, 5) and trace.activations.shape == (2, 5, 3, 4, 5)
    assert torch.isfinite(trace.cam).all() and (trace.cam >= 0).all() and trace.cam.amax() > 0
    assert (trace.gradients is None) == (not METHODS[method].needs_gradients)
    assert trace.weights.ndim == 5


def test_scorecam_3d_equals_a_slow_loop() -> None:
    model, x = small_net(2), torch.randn(1, 1, 6, 8, 10, generator=torch.Generator().manual_seed(3))
    calls: list[tuple[int, int]] = []
    trace = trace_cam(model, x, "3", 1, "scorecam", batch_size=2,
                      progress=lambda done, total: calls.append((done, total)))
    activations = trace.activations[0]
    expected = []
    with torch.no_grad():
        for fmap in activations:
            if fmap.max() == fmap.min():
                expected.append(0.0)
                continue
            mask = F.interpolate(fmap[None, None], size=(6, 8, 10), mode="trilinear", align_corners=False)
            mask = (mask - mask.min()) / (mask.max() - mask.min())
            expected.append(float(torch.softmax(model(x * mask), dim=1)[0, 1]))
    torch.testing.assert_close(trace.weights.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-7)
    weighted = (torch.tensor(expected)[:, None, None, None] * activations).sum(0)
    torch.testing.assert_close(trace.cam[0], torch.relu(weighted))
    informative = sum(1 for fmap in activations if fmap.max() > fmap.min())
    assert calls[-1] == (informative, informative) and len(calls) == -(-informative // 2)


def test_guided_backprop_through_conv3d_by_hand() -> None:
    model, x = small_net(4), torch.randn(1, 1, 4, 6, 6, generator=torch.Generator().manual_seed(5))
    conv1, conv2, fc = model[0], model[2], model[6]
    with torch.no_grad():  # forward by hand, then the guided backward: positive gradients at positive inputs
        z1 = conv1(x)
        z2 = conv2(torch.relu(z1))
        target = int(fc(torch.relu(z2).mean(dim=(2, 3, 4))).argmax())
        grad_a2 = fc.weight[target].reshape(1, -1, 1, 1, 1).expand_as(z2) / z2[0, 0].numel()
        grad_z2 = grad_a2.clamp_min(0) * (z2 > 0)
        grad_a1 = F.conv_transpose3d(grad_z2, conv2.weight, stride=2, padding=1, output_padding=1)
        grad_z1 = grad_a1.clamp_min(0) * (z1 > 0)
        expected = F.conv_transpose3d(grad_z1, conv1.weight, padding=1)
    ours = guided_backprop(model, x)
    assert ours.shape == x.shape and expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    cam = trace_cam(model, x, "3", target).cam
    upsampled = F.interpolate(cam[:, None], size=(4, 6, 6), mode="trilinear", align_corners=False)
    torch.testing.assert_close(guided_gradcam(model, x, "3", target), expected * upsampled, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(7)
    model = nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=3, init_features=8, growth_rate=4,
                          block_config=(2, 2))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        # Scores of a few units: MONAI's 1e-7 in Grad-CAM++'s denominator is then negligible next to 2 g^2, and
        # its exp(score) factor stays finite.
        model.class_layers.out.weight.mul_(10)
    return model.eval()


def _normalised(cam: Tensor, size: tuple[int, ...]) -> Tensor:
    """Our raw map as MONAI shows it: trilinear to the input (align_corners=False), min-max per image."""
    up = F.interpolate(cam[:, None], size=size, mode="trilinear", align_corners=False)
    low = up.amin(dim=(2, 3, 4), keepdim=True)
    return (up - low) / (up.amax(dim=(2, 3, 4), keepdim=True) - low)


@pytest.mark.parametrize("layer", ["features.denseblock1", "class_layers.relu"])
def test_gradcam_agrees_with_monai(densenet: nn.Module, layer: str) -> None:
    """MONAI's ``GradCAM.compute_map`` is ReLU(sum_k mean(g^k) A^k) (N, 1, d, h, w): our raw map. Its ``__call__``
    upsamples trilinearly (align_corners=False) and applies ``default_normalizer``, which maps (min, max) to
    (1, 0): the flipped min-max of our upsampled map."""
    x = torch.randn(2, 1, 16, 32, 32, generator=torch.Generator().manual_seed(8))
    trace = trace_cam(densenet, x, layer, 2)  # MONAI takes one class for the batch (a list selects several)
    cam = GradCAM(nn_module=copy.deepcopy(densenet), target_layers=layer)  # MONAI's hooks are never removed
    raw = cam.compute_map(x, class_idx=2).detach()
    assert raw.shape[2:] == trace.cam.shape[1:] and len(trace.cam.shape) == 4
    torch.testing.assert_close(trace.cam, raw[:, 0], rtol=1e-4, atol=1e-4 * float(raw.max()))
    shown = cam(x, class_idx=2)
    torch.testing.assert_close(_normalised(trace.cam, x.shape[2:]), 1 - shown, rtol=0, atol=1e-4)


def test_gradcam_pp_agrees_with_monai_where_the_formulas_coincide(densenet: nn.Module) -> None:
    """MONAI's Grad-CAM++ differs from ours (Chattopadhay et al. 2018, eq. 19) in three ways:

    * its denominator is 2 g_ij^2 + sum_ab A_ab g_ab^3 (the gradient inside the sum, as pytorch-grad-cam), not
      2 g_ij^2 + g_ij^3 sum_ab A_ab;
    * it weights ReLU(exp(y^c) g), the paper's exponential score: a positive factor per image, so the same map up
      to that scale, identical once normalised;
    * it adds 1e-7 to the denominator.

    On the layer just before global average pooling and the linear head, g_ab = W[c, k] / (d h w) is constant over
    space, so both denominators are equal: the raw maps agree up to exp(y^c) and the shown maps exactly (1e-4).
    On an inner layer they differ; there MONAI's map equals its own formula applied to our activations and
    gradients, so the difference is the formula only, not what the two engines capture.
    """
    x = torch.randn(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(9))  # MONAI's needs a batch of 1
    trace = trace_cam(densenet, x, "class_layers.relu", 1, "gradcam++")
    cam = GradCAMpp(nn_module=copy.deepcopy(densenet), target_layers="class_layers.relu")
    raw = cam.compute_map(x, class_idx=1)[:, 0].detach()
    scale = trace.scores.exp().reshape(1, 1, 1, 1)
    torch.testing.assert_close(raw, scale * trace.cam, rtol=1e-4, atol=1e-4 * float(raw.max()))
    shown = cam(x, class_idx=1)
    torch.testing.assert_close(_normalised(trace.cam, x.shape[2:]), 1 - shown, rtol=0, atol=1e-4)

    inner = trace_cam(densenet, x, "features.denseblock1", 1, "gradcam++")
    theirs = GradCAMpp(nn_module=copy.deepcopy(densenet), target_layers="features.denseblock1").compute_map(
        x, class_idx=1)[:, 0]
    theirs = theirs.detach()
    acti, grad = inner.activations, inner.gradients
    denominator = 2 * grad**2 + (acti * grad**3).sum(dim=(2, 3, 4), keepdim=True)
    alpha = grad**2 / (torch.where(denominator != 0, denominator, torch.ones_like(denominator)) + 1e-7)
    weights = (alpha * torch.relu(inner.scores.exp().reshape(1, 1, 1, 1, 1) * grad)).sum(dim=(2, 3, 4), keepdim=True)
    torch.testing.assert_close(theirs, torch.relu((weights * acti).sum(1)), rtol=1e-4, atol=1e-4 * float(theirs.max()))
    assert not torch.allclose(_normalised(inner.cam, x.shape[2:]), _normalised(theirs, x.shape[2:]), atol=1e-3)


def test_candidate_layers_of_a_3d_network() -> None:
    layers = candidate_layers(small_net(), torch.zeros(1, 1, 4, 6, 8))
    assert [(info.name, info.shape) for info in layers] == [("0", (4, 4, 6, 8)), ("1", (4, 4, 6, 8)),
                                                            ("2", (5, 2, 3, 4)), ("3", (5, 2, 3, 4))]
    assert last_feature_map(layers) == "3" and layers[-1].describe() == "3 (ReLU) · 5×2×3×4"
