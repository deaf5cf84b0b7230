"""Trust checks: region share by hand, rank correlation by hand, deletion/insertion on a model with a known
score and on the real model, model randomisation without touching the caller's model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import gradcam_core.trust as trust
from gradcam_core import LoadedModel, Preprocessing, TargetError, explain, to_input
from gradcam_core.cam import CamTrace
from gradcam_core.trust import (
    TrustCheckError,
    blur_baseline,
    deletion_insertion,
    randomized_copy,
    rank_correlation,
    region_check,
    sanity_check,
)

# ------------------------------------------------------------------------------------------------ region check

HEAT = np.array(
    [
        [0, 0, 0, 0],
        [0, 1, 2, 0],
        [0, 3, 4, 0],
        [0, 0, 0, 2],
    ],
    dtype=np.float32,
)  # total heat 12, peak 4 at (2, 2)


def test_region_check_by_hand() -> None:
    centre = np.zeros((4, 4), dtype=bool)
    centre[1:3, 1:3] = True
    check = region_check(HEAT, centre)
    assert check.heat_share == pytest.approx(10 / 12)
    assert check.area_share == 4 / 16
    assert check.peak_inside is True
    assert check.describe() == "83% of the heat in 25% of the image; the peak is inside."

    corner = np.zeros((4, 4), dtype=np.uint8)
    corner[3, :] = 1  # bottom row, 0/1 mask
    check = region_check(HEAT, corner)
    assert (check.heat_share, check.area_share, check.peak_inside) == (pytest.approx(2 / 12), 4 / 16, False)


def test_region_check_tied_peaks_count_if_any_is_inside() -> None:
    heat = np.array([[1.0, 0.0], [0.0, 1.0]])
    mask = np.array([[False, False], [False, True]])
    assert region_check(heat, mask).peak_inside is True


@pytest.mark.parametrize(
    ("heat", "mask", "words"),
    [
        (HEAT, np.zeros((4, 4), bool), "empty"),
        (HEAT, np.ones((3, 4), bool), "same image"),
        (np.zeros((4, 4)), np.ones((4, 4), bool), "all zero"),
        (-HEAT, np.ones((4, 4), bool), "negative"),
        (np.full((4, 4), np.nan), np.ones((4, 4), bool), "NaN"),
        (np.ones(4), np.ones(4, bool), "2-D"),
    ],
)
def test_region_check_refuses_unmeasurable_inputs(heat, mask, words) -> None:
    with pytest.raises(TrustCheckError, match=words) as info:
        region_check(heat, mask)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


# -------------------------------------------------------------------------------------------- rank correlation


def test_rank_correlation_by_hand() -> None:
    a = np.arange(12.0).reshape(3, 4)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.exp(a)) == pytest.approx(1.0)  # ranks only
    # No ties: 1 - 6 sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60.
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Ties share their mean rank: ranks (0, 1, 2.5, 4, 2.5); Pearson of ranks = 8 / sqrt(10 * 9.5).
    assert rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert rank_correlation(np.zeros(5), np.arange(5.0)) == 0.0  # a constant map correlates with nothing
    with pytest.raises(TrustCheckError):
        rank_correlation(np.zeros(4), np.zeros(5))


# ------------------------------------------------------------------------------------------ deletion/insertion

SIZE = 32
REGION = (slice(8, 16), slice(8, 16))  # 64 of 1024 pixels


class RegionEnergy(nn.Module):
    """Two classes with logits (4 (s - 1/2), 0), s = mean of x^2 over REGION of channel 0: p = sigmoid(4 s - 2)."""

    def forward(self, x: Tensor) -> Tensor:
        s = (x[:, 0][:, REGION[0], REGION[1]] ** 2).mean(dim=(1, 2))
        return torch.stack([4 * (s - 0.5), torch.zeros_like(s)], dim=1)


@pytest.fixture(scope="module")
def region_model() -> LoadedModel:
    prep = Preprocessing(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), keep_aspect=False)
    return LoadedModel("region", "Region energy", RegionEnergy().eval(), ("region", "rest"), prep, "", ())


@pytest.fixture(scope="module")
def checkerboard() -> Image.Image:
    """Grey (input 0) with a black/white checkerboard (input ±1, so s = 1) on REGION; blurring flattens it."""
    pixels = np.full((SIZE, SIZE, 3), 127.5, dtype=np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    board = np.where((yy + xx) % 2 == 0, 255.0, 0.0)
    pixels[REGION] = board[REGION][..., None]
    return Image.fromarray(np.round(pixels).astype(np.uint8))


def test_deletion_insertion_on_a_known_score(region_model: LoadedModel, checkerboard: Image.Image) -> None:
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[REGION] = 1.0  # the map points exactly at what the score reads
    curves = deletion_insertion(region_model, checkerboard, heat, 0, steps=16, random_orders=2)

    inputs = to_input(checkerboard, region_model.preprocessing)
    with torch.no_grad():
        p_blurred = float(region_model.model(blur_baseline(inputs)).softmax(1)[0, 0])
    p_original = 1 / (1 + math.exp(-2))  # s = 1 exactly
    assert p_blurred < 0.3
    np.testing.assert_allclose(curves.fractions, np.arange(17) / 16)
    for curve in (curves.deletion, curves.random_deletion):
        assert curve[0] == pytest.approx(p_original, abs=1e-6) and curve[-1] == pytest.approx(p_blurred, abs=1e-6)
    for curve in (curves.insertion, curves.random_insertion):
        assert curve[0] == pytest.approx(p_blurred, abs=1e-6) and curve[-1] == pytest.approx(p_original, abs=1e-6)
    # The region is 1/16 of the image: the first step deletes (reveals) all of it, and nothing else matters.
    assert curves.deletion[1:] == pytest.approx(np.full(16, p_blurred), abs=1e-6)
    assert curves.insertion[1:] == pytest.approx(np.full(16, p_original), abs=1e-6)
    expected_deletion = (p_original + p_blurred) / 32 + p_blurred * 15 / 16
    assert curves.deletion_auc == pytest.approx(expected_deletion, abs=1e-6)
    assert curves.deletion_auc < curves.random_deletion_auc - 0.1
    assert curves.insertion_auc > curves.random_insertion_auc + 0.1
    assert curves.beats_random and curves.target == 0


def test_deletion_insertion_uses_the_models_activation(region_model, checkerboard) -> None:
    heat = np.ones((SIZE, SIZE))
    softmax = deletion_insertion(region_model, checkerboard, heat, 1, steps=2)
    assert softmax.deletion[0] == pytest.approx(1 - 1 / (1 + math.exp(-2)), abs=1e-6)
    sigmoid = deletion_insertion(replace(region_model, activation="sigmoid"), checkerboard, heat, 1, steps=2)
    assert sigmoid.deletion == pytest.approx(np.full(3, 0.5))  # class 1's logit is always 0


def test_deletion_insertion_random_order_is_seeded(region_model, checkerboard) -> None:
    heat = np.random.default_rng(5).random((SIZE, SIZE))
    runs = [deletion_insertion(region_model, checkerboard, heat, steps=4, seed=s) for s in (1, 1, 2)]
    one_step = deletion_insertion(region_model, checkerboard, heat, steps=1)
    assert one_step.deletion == pytest.approx(one_step.insertion[::-1]) and len(one_step.fractions) == 2
    assert np.array_equal(runs[0].random_deletion, runs[1].random_deletion)
    assert not np.array_equal(runs[0].random_deletion, runs[2].random_deletion)
    assert runs[0].target == 0  # top class by default


def test_deletion_insertion_refuses_bad_inputs(region_model, checkerboard) -> None:
    with pytest.raises(TrustCheckError):
        deletion_insertion(region_model, checkerboard, np.ones((4, 4, 3)), 0)
    with pytest.raises(TrustCheckError):
        deletion_insertion(region_model, checkerboard, np.ones((4, 4)), 0, steps=0)
    with pytest.raises(TargetError):
        deletion_insertion(region_model, checkerboard, np.ones((4, 4)), 7)


def test_gradcam_beats_random_order_on_the_real_model(lite0, assets) -> None:
    """Espresso on coffee.png: deleting Grad-CAM's hottest pixels first drops faster than a random order, and
    revealing them first rises faster. (On chelsea.png the top class, Egyptian cat, gains probability while its
    striped coat is blurred away, so its deletion curve is no better than chance; see benchmarks/faithfulness.)"""
    image = Image.open(assets / "coffee.png")
    explanation = explain(image, lite0)
    curves = deletion_insertion(lite0, image, explanation.heatmap, steps=8)
    assert curves.target == explanation.target.index == 967
    assert curves.deletion[0] == pytest.approx(explanation.target.probability, abs=1e-5)
    assert curves.deletion_auc < curves.random_deletion_auc
    assert curves.insertion_auc > curves.random_insertion_auc
    # The automatic batch (2 images at this size) scores the same images as any fixed batch.
    assert trust.masked_batch_size(lite0.model, to_input(image.convert("RGB"), lite0.preprocessing)) == 2
    for batch in (1, 5):
        fixed = deletion_insertion(lite0, image, explanation.heatmap, steps=8, batch_size=batch)
        np.testing.assert_allclose(fixed.deletion, curves.deletion, atol=1e-5)
        np.testing.assert_allclose(fixed.insertion, curves.insertion, atol=1e-5)


# ----------------------------------------------------------------------------------------------- sanity check


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_sanity_check_on_the_real_model_leaves_it_untouched(lite0, assets) -> None:
    state = {name: value.clone() for name, value in lite0.model.state_dict().items()}
    flags = [m.training for m in lite0.model.modules()]
    rng_state = torch.random.get_rng_state()
    image = Image.open(assets / "chelsea.png")

    check = sanity_check(lite0, image)

    assert check.randomized_modules == ("_fc", "_bn1")  # from the output down to the default layer
    assert check.layer == lite0.default_layer and check.method == "gradcam" and check.target == 285
    assert check.real_map.shape == check.random_map.shape == (7, 11)
    assert check.similarity < 0.5 and not check.suspicious
    real = explain(image, lite0)
    np.testing.assert_array_equal(check.real_map, real.raw_map)
    assert not np.array_equal(check.random_map, real.raw_map)
    # The caller's model: same parameters and buffers, same modes, no hook; the global RNG: undisturbed.
    after = lite0.model.state_dict()
    assert all(torch.equal(after[name], value) for name, value in state.items())
    assert [m.training for m in lite0.model.modules()] == flags
    assert _hook_count(lite0.model) == 0
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_randomized_copy_is_reusable_and_seeded(lite0, assets) -> None:
    head_only = randomized_copy(lite0, randomize=1, seed=3)
    assert head_only.modules == ("_fc",) and head_only.model is not lite0.model
    assert _hook_count(head_only.model) == 0
    again = randomized_copy(lite0, randomize=1, seed=3)
    assert torch.equal(again.model._fc.weight, head_only.model._fc.weight)
    assert not torch.equal(head_only.model._fc.weight, lite0.model._fc.weight)
    assert torch.equal(head_only.model._bn1.weight, lite0.model._bn1.weight)
    deeper = randomized_copy(lite0, randomize=3)
    assert deeper.modules == ("_fc", "_bn1", "_conv_head")
    image = Image.open(assets / "coffee.png")
    cached = sanity_check(lite0, image, randomized=head_only)
    fresh = sanity_check(lite0, image, randomize=1, seed=3)
    assert cached.similarity == fresh.similarity and cached.randomized_modules == ("_fc",)


def test_a_map_that_ignores_the_weights_is_flagged(lite0, assets, monkeypatch) -> None:
    """The flag logic: a stub method returning the same map whatever the weights gives similarity 1."""
    real_trace_cam = trust.trace_cam
    fixed = torch.arange(77, dtype=torch.float32).reshape(1, 7, 11)

    def insensitive(model, inputs, layer, targets=None, method="gradcam", **options) -> CamTrace:
        trace = real_trace_cam(model, inputs, layer, targets, method, **options)
        return CamTrace(**{**trace.__dict__, "cam": fixed.clone()})

    monkeypatch.setattr(trust, "trace_cam", insensitive)
    randomized = randomized_copy(lite0, randomize=1)
    check = sanity_check(lite0, Image.open(assets / "coffee.png"), randomized=randomized)
    assert check.similarity == pytest.approx(1.0) and check.suspicious
    assert not sanity_check(lite0, Image.open(assets / "coffee.png"), randomized=randomized, threshold=1.0).suspicious


def test_randomized_copy_refuses_bad_depths(lite0) -> None:
    with pytest.raises(TrustCheckError):
        randomized_copy(lite0, randomize=0)
    headless = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(TrustCheckError, match="layer"):
        randomized_copy(headless)  # a bare module has no default layer
    with pytest.raises(TrustCheckError, match="nothing to randomise"):
        randomized_copy(headless, "1")
    assert randomized_copy(headless, "0").modules == ("0",)


def test_a_strongly_inverted_map_is_flagged_too(lite0, assets, monkeypatch) -> None:
    """A rank correlation of -0.7 means the map survives randomisation (inverted): the method is suspect."""
    from gradcam_core import trust

    monkeypatch.setattr(trust, "rank_correlation", lambda a, b: -0.7)
    check = trust.sanity_check(lite0, assets / "chelsea.png", "_blocks.15", randomize=1)
    assert check.similarity == -0.7 and check.suspicious
    monkeypatch.setattr(trust, "rank_correlation", lambda a, b: -0.3)
    assert not trust.sanity_check(lite0, assets / "chelsea.png", "_blocks.15", randomize=1).suspicious


def test_deletion_insertion_reports_progress_and_can_be_stopped(lite0, assets) -> None:
    from gradcam_core import explain
    from gradcam_core.trust import deletion_insertion

    found = explain(assets / "coffee.png", lite0)
    seen: list[tuple[int, int]] = []
    curves = deletion_insertion(lite0, found.image, found.raw_map, progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert seen == [(done, total) for done in range(1, total + 1)] and total > 2
    assert 0 <= curves.deletion_auc <= 1

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        deletion_insertion(lite0, found.image, found.raw_map, progress=stop)
