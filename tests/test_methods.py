"""The other gradient-based CAM methods: values by hand on tiny models, and agreement with pytorch-grad-cam."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision

from gradcam_core import METHODS, ModelError, compute_cam, trace_cam
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

    for name in (name for name, method in METHODS.items() if not method.forward_passes):
        result = explain(assets / "coffee.png", model=lite0, method=name, target="espresso")
        assert result.method == name and result.heatmap.shape == (400, 600)
        assert np.isfinite(result.heatmap).all()


def _softmax_probability(logits: list[float], index: int) -> float:
    exps = [math.exp(v) for v in logits]
    return exps[index] / sum(exps)


def test_scorecam_by_hand() -> None:
    # Masks = min-max scaled A0, A1: M0 = [[0, 1/3], [2/3, 1]], M1 = [[1, 2/3], [1/3, 0]]. The masked inputs'
    # channel means are (A0.M0, A1.M0) = (5/3, 5/6) and (A0.M1, A1.M1) = (5/6, 5/3); with W the logits are
    # (5/6, 15/4) and (-5/6, 5/2); alpha_k = softmax probability of class 1.
    model, x = gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, A1)
    s0 = _softmax_probability([5 / 6, 15 / 4], 1)
    s1 = _softmax_probability([-5 / 6, 5 / 2], 1)
    expected = torch.relu(s0 * torch.tensor(A0) + s1 * torch.tensor(A1))
    trace = trace_cam(model, x, "layer", targets=1, method="scorecam")
    torch.testing.assert_close(trace.weights.flatten(), torch.tensor([s0, s1]))
    torch.testing.assert_close(trace.cam[0], expected)


def _sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_scorecam_sigmoid_by_hand() -> None:
    # The masked inputs' logits as in test_scorecam_by_hand; a multi-label model scores class 1 on its own:
    # alpha_k = sigmoid(y^1) = sigmoid(15/4), sigmoid(5/2), where softmax gave sigmoid(15/4 - 5/6), ...
    model, x = gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, A1)
    s0, s1 = _sigmoid(15 / 4), _sigmoid(5 / 2)
    trace = trace_cam(model, x, "layer", targets=1, method="scorecam", activation="sigmoid")
    torch.testing.assert_close(trace.weights.flatten(), torch.tensor([s0, s1]))
    torch.testing.assert_close(trace.cam[0], torch.relu(s0 * torch.tensor(A0) + s1 * torch.tensor(A1)))
    softmax = trace_cam(model, x, "layer", targets=1, method="scorecam")
    assert (softmax.weights - trace.weights).abs().min() > 0.02


def test_unknown_activation_is_refused() -> None:
    with pytest.raises(ModelError, match=r"^Unknown activation 'relu'; choose softmax .* or sigmoid"):
        compute_cam(gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, A1), "layer", 1, activation="relu")


def test_explain_scores_masks_with_the_models_activation(assets) -> None:
    from gradcam_core import LoadedModel, Preprocessing, explain, load_image, to_input

    torch.manual_seed(2)
    model = torch.nn.Sequential(
        OrderedDict(layer=torch.nn.Conv2d(3, 4, 3), pool=torch.nn.AdaptiveAvgPool2d(1), flat=torch.nn.Flatten(),
                    fc=torch.nn.Linear(4, 3))
    ).eval()
    prep = Preprocessing(size=32, keep_aspect=False)
    loaded = LoadedModel("tiny", "Tiny", model, ("a", "b", "c"), prep, "layer", (), activation="sigmoid")
    result = explain(assets / "chelsea.png", model=loaded, method="scorecam", target="b", keep_trace=True)
    x = to_input(load_image(assets / "chelsea.png"), prep)
    sigmoid = trace_cam(model, x, "layer", 1, "scorecam", activation="sigmoid")
    softmax = trace_cam(model, x, "layer", 1, "scorecam")
    torch.testing.assert_close(result.trace.weights, sigmoid.weights)
    assert not torch.allclose(result.trace.weights, softmax.weights)


def test_scorecam_skips_constant_maps_and_reports_progress() -> None:
    model, x = gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, [[2.0, 2.0], [2.0, 2.0]])
    seen: list[tuple[int, int]] = []
    trace = trace_cam(model, x, "layer", targets=1, method="scorecam", progress=lambda d, t: seen.append((d, t)))
    assert trace.weights.flatten()[1] == 0.0  # the constant channel shows nothing: weight 0, no forward pass
    assert seen == [(1, 1)]


def test_scorecam_can_be_cancelled_from_its_progress_callback() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()

    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_cam(model, torch.randn(1, 3, 64, 64), "layer4", 3, method="scorecam", progress=cancel, batch_size=8)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize(("channels", "side", "expected"), [(16, 64, 32), (64, 128, 4), (256, 128, 1)])
def test_scorecam_batch_keeps_the_largest_activation_small(channels: int, side: int, expected: int) -> None:
    """Largest activation of one image: channels x side x side floats; batches stay under 16 MB (1 to 32)."""
    from gradcam_core.cam import MASKED_BATCH_BYTES, masked_batch_size

    model = torch.nn.Sequential(
        OrderedDict(conv=torch.nn.Conv2d(3, channels, 1), pool=torch.nn.AdaptiveAvgPool2d(1),
                    flat=torch.nn.Flatten(), fc=torch.nn.Linear(channels, 2))
    )
    assert MASKED_BATCH_BYTES == 16 * 2**20
    assert masked_batch_size(model, torch.zeros(1, 3, side, side)) == expected


def test_scorecam_same_map_at_any_batch_size_and_in_training_mode() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    automatic = compute_cam(model, x, "layer4", 3, method="scorecam")
    for batch in (1, 7, 32):
        torch.testing.assert_close(compute_cam(model, x, "layer4", 3, method="scorecam", batch_size=batch), automatic)
    model.train()  # switched to eval under its lock, once: the batch-size probe must not wait for that lock
    torch.testing.assert_close(compute_cam(model, x, "layer4", 3, method="scorecam"), automatic)
    assert model.training


def test_eigencam_by_hand() -> None:
    # (hw, K) = [[1,4],[2,3],[3,2],[4,1]]: M^T M = [[30,20],[20,30]], first direction (1,1)/sqrt 2,
    # so the map is (A0 + A1)/sqrt 2 = 5/sqrt 2 everywhere, whatever the class.
    for target in (0, 1):
        cam = compute_cam(gap_linear_model([[1.0, -1.0], [2.0, 0.5]]), feature_input(A0, A1), "layer", target,
                          method="eigencam")
        torch.testing.assert_close(cam[0], torch.full((2, 2), 5 / math.sqrt(2)))


def test_slow_methods_on_the_real_model_at_a_small_layer(lite0, assets) -> None:
    from gradcam_core import explain

    for name in ("scorecam", "eigencam"):
        result = explain(assets / "coffee.png", model=lite0, layer="_blocks.0", method=name, target="espresso")
        assert result.heatmap.shape == (400, 600) and result.strength > 0


SAMPLES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "retina.jpg")


@pytest.mark.parametrize("method", [name for name in METHODS if name != "scorecam"])
def test_every_method_gives_a_map_on_every_sample_at_its_default_layer(lite0, assets, method) -> None:
    """At a batch-norm output (Lite0's ``_bn1``) methods with non-negative weights came out nearly empty."""
    from gradcam_core import explain

    for sample in SAMPLES:
        found = explain(assets / sample, lite0, method=method)
        assert found.layer == lite0.default_layer_for(method)
        assert found.strength > 0 and (found.raw_map > 0).mean() > 0.1, (sample, method)


def test_scorecam_gives_a_map_at_its_default_layer(lite0, assets) -> None:
    """Score-CAM at ``_bn1`` ended with "The map is empty" after minutes; at the ReLU6 after it the map is whole."""
    from gradcam_core import explain

    assert lite0.default_layer_for("scorecam") == "_head_act" and lite0.default_layer == "_bn1"
    found = explain(assets / "coffee.png", lite0, method="scorecam")
    assert found.layer == "_head_act"
    assert found.strength > 0 and (found.raw_map > 0).mean() > 0.5


@pytest.mark.parametrize(
    ("name", "default", "activated"),
    [
        ("resnet18", "layer4", "layer4"),  # BasicBlock's ReLU is registered before its last conv
        ("efficientnet_b0", "features", "features"),  # ends with SiLU
        ("densenet121", "features", "features"),  # ends with norm5 and nothing later: stays
        ("vgg11", "features.18", "features.19"),  # a conv, then its ReLU
    ],
)
def test_activated_layer_is_read_from_the_values(name: str, default: str, activated: str) -> None:
    from gradcam_core.layers import activated_layer, candidate_layers

    model = torchvision.models.get_model(name).eval()
    layers = candidate_layers(model, (64, 64))
    probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert activated_layer(model, layers, default, probe) == activated
