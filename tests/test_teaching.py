"""Teaching intermediates: the numbers the "How it works" view shows are those of the main computation."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torchvision

from gradcam_core import (
    METHODS, MODELS, cam_steps, compute_cam, explain, heatmap_from_map, load_image, to_input, trace_cam,
)
from gradcam_core.teaching import channel_weights, top_channels

from dashboard import tiles


@pytest.fixture(scope="module")
def cat(assets):
    return load_image(assets / "chelsea.png")


FAST_METHODS = [name for name, method in METHODS.items() if not method.forward_passes]  # Score-CAM: test_methods


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("target", [None, "plastic bag"])
def test_steps_are_the_main_computation(lite0, cat, method: str, target: str | None) -> None:
    result = explain(cat, lite0, target=target, method=method, keep_trace=True)
    steps = cam_steps(result.trace)
    inputs = to_input(cat, lite0.preprocessing)
    assert result.layer == lite0.default_layer_for(method)
    reference = compute_cam(lite0.model, inputs, result.layer, result.target.index, method)[0].numpy()
    assert np.array_equal(np.maximum(steps.weighted_sum, 0), reference)  # step 3 after ReLU
    assert np.array_equal(steps.cam, result.raw_map)
    assert np.array_equal(heatmap_from_map(steps.cam, (cat.height, cat.width)), result.heatmap)  # step 4
    assert steps.score == result.score and steps.target == result.target.index and steps.method == method
    activations = result.trace.activations[0].numpy()
    assert steps.activations.shape == activations.shape and np.array_equal(steps.activations, activations)
    assert np.array_equal(steps.channels, np.arange(activations.shape[0]))
    full_weights = result.trace.weights[0]
    assert steps.elementwise == METHODS[method].elementwise == (full_weights.shape[-2:] != (1, 1))  # registry fact
    if steps.elementwise:
        expected = (full_weights * result.trace.activations[0]).sum(0).numpy()
        assert np.allclose(steps.weighted_sum, expected, rtol=1e-5, atol=1e-6)
        assert np.array_equal(steps.weights, full_weights.mean(dim=(1, 2)).numpy())
    else:
        expected = (steps.weights[:, None, None] * steps.activations).sum(0)
        scale = float(np.abs(steps.weighted_sum).max())
        assert np.allclose(steps.weighted_sum, expected, rtol=1e-5, atol=1e-6 * scale)
    assert np.isclose(steps.contributions.sum(), steps.weighted_sum.mean(), rtol=1e-4, atol=1e-7)


def test_gradcam_weights_are_the_mean_gradient(lite0, cat) -> None:
    trace = explain(cat, lite0, keep_trace=True).trace
    mean_gradient = trace.gradients[0].mean(dim=(1, 2)).numpy()
    assert np.array_equal(cam_steps(trace).weights, mean_gradient)
    assert np.array_equal(channel_weights(trace), mean_gradient)
    counter = explain(cat, lite0, method="counterfactual", keep_trace=True).trace
    assert np.array_equal(channel_weights(counter), -mean_gradient)
    assert len(cam_steps(trace).weights) == 1280


def test_class_changes_the_weights_not_the_feature_maps(lite0, cat) -> None:
    first = cam_steps(explain(cat, lite0, keep_trace=True).trace)
    second = cam_steps(explain(cat, lite0, target="lynx", keep_trace=True).trace)
    assert np.array_equal(first.activations, second.activations)
    assert not np.array_equal(first.weights, second.weights)


def test_top_channels() -> None:
    weights = np.array([0.1, -0.5, 0.3, 0.3, -0.2], np.float32)
    assert top_channels(weights, 2).tolist() == [2, 3]
    assert top_channels(weights, 2, "smallest").tolist() == [1, 4]
    assert top_channels(weights, 3, "magnitude").tolist() == [1, 2, 3]
    assert top_channels(weights, 99).tolist() == [2, 3, 0, 4, 1]
    assert top_channels(weights, 0).size == 0


def test_keep_holds_only_some_feature_maps(lite0, cat) -> None:
    steps = cam_steps(explain(cat, lite0, keep_trace=True).trace)
    kept = steps.keep(np.array([7, 3]))
    assert kept.activations.shape == (2, *steps.cam.shape) and kept.num_channels == steps.num_channels
    assert np.array_equal(kept.activation(3), steps.activations[3])
    with pytest.raises(KeyError):
        kept.activation(4)


def test_dashboard_keeps_whole_steps_when_small_and_the_tiles_when_large(lite0, cat) -> None:
    small = cam_steps(explain(cat, lite0, keep_trace=True).trace)
    assert tiles.keep_tiles(small) is small
    large = cam_steps(explain(cat, lite0, layer="_conv_stem", keep_trace=True).trace)
    assert large.activations.size > tiles.ACTIVATION_BUDGET
    kept = tiles.keep_tiles(large)
    assert kept.activations.size <= tiles.ACTIVATION_BUDGET
    for ranking in tiles.RANKINGS:
        for channel in tiles.tile_channels(large, ranking):
            assert np.array_equal(kept.activation(int(channel)), large.activations[channel])
    assert np.array_equal(kept.weights, large.weights) and np.array_equal(kept.weighted_sum, large.weighted_sum)


@pytest.mark.parametrize("name", [name for name in MODELS if name != "efficientnet_lite0"])
def test_steps_for_every_torchvision_model(name: str) -> None:
    """Every model the dashboard offers gives steps that add up (random weights: the files are not here)."""
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    preprocessing = MODELS[name].preprocessing()
    side = 96 if preprocessing.keep_aspect else preprocessing.size  # ViT and Swin take only their own size
    trace = trace_cam(model, torch.randn(1, 3, side, side), MODELS[name].default_layer, 3)
    steps = cam_steps(trace)
    assert steps.activations.ndim == 3 and steps.weights.shape == (steps.activations.shape[0],)
    assert np.array_equal(steps.cam, np.maximum(steps.weighted_sum, 0))
    expected = (steps.weights[:, None, None] * steps.activations).sum(0)
    assert np.allclose(steps.weighted_sum, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))
    assert len(tiles.tile_channels(steps, "largest weights")) == min(tiles.TILES, steps.num_channels)
