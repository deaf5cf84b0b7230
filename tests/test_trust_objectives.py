"""Trust checks that follow the objective, by hand on tiny fixed-weight models: the deletion and insertion curves
of a segmentation region (fixed on the unmasked image, never redrawn on a masked copy), of several classes
together and of a binary model's negative side; one class gives the numbers of the class-only rule (1e-7); the
sanity check's randomised copy explains the real model's objective, region included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from gradcam_core import (
    BinaryLogit,
    ClassScore,
    LoadedModel,
    Preprocessing,
    RegionScore,
    TargetError,
    WeightedClasses,
    predicted_mask,
    to_input,
)
from gradcam_core import trust
from gradcam_core.cam import trace_cam
from gradcam_core.targets import probabilities

SIZE = 8
PREP = Preprocessing(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), keep_aspect=False)
S = 1 / (1 + math.exp(-3))  # sigmoid(3): class 1's probability on a white pixel of the pixel net
COUNTS = np.array([0, 16, 32, 48, 64])  # 0, 2, 4, 6 and 8 rows of the 8 x 8 input
RASTER = np.arange(SIZE * SIZE)  # top row first
LEFT = np.zeros((SIZE, SIZE), dtype=bool)
LEFT[:, : SIZE // 2] = True


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def pixel_net() -> nn.Conv2d:
    """A 1x1-convolution segmentation: class 0's logit 0, class 1's 3 x channel 0, so p1 = sigmoid(3 x) per pixel."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1, 0] = 3.0
    return conv.eval()


class HalfMeans(nn.Module):
    """Two logits: 2 x the mean of channel 0 over the left half of the input, and over the right half."""

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        return torch.stack([2 * x[:, 0, :, :half].mean(dim=(1, 2)), 2 * x[:, 0, :, half:].mean(dim=(1, 2))], dim=1)


class MeanLogit(nn.Module):
    """One logit: 2 x the mean of channel 0."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * x[:, :1].mean(dim=(2, 3))


def loaded(network: nn.Module, categories: tuple[str, ...], **options: object) -> LoadedModel:
    return LoadedModel("tiny", "Tiny", network.eval(), categories, PREP, "", (), **options)


def picture(columns: int) -> Image.Image:
    """8 x 8: the first ``columns`` columns white (input +1), the rest black (input -1)."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, :columns] = 255
    return Image.fromarray(pixels)


def test_a_region_stays_the_unmasked_images_while_pixels_are_deleted() -> None:
    inputs = to_input(picture(4), PREP)  # left half +1: class 1 there (p1 = S), class 0 on the right
    black = torch.full_like(inputs, -1.0)  # a deleted pixel has p1 = 1 - S
    index, deletion, insertion = trust.masked_curves(pixel_net(), "softmax", inputs, black, [RASTER], COUNTS, 1)
    # 4 of each deleted row's 8 pixels are in the region (32 pixels): its mean p1 is ((32 - k) S + k (1 - S)) / 32.
    deleted = np.array([0, 8, 16, 24, 32])
    assert index == 1
    np.testing.assert_allclose(deletion[0], ((32 - deleted) * S + deleted * (1 - S)) / 32, atol=1e-6)
    np.testing.assert_allclose(insertion[0], (deleted * S + (32 - deleted) * (1 - S)) / 32, atol=1e-6)
    # Redrawn on each masked copy, the region would shrink to the white pixels left and stay at S.
    assert deletion[0, 2] == pytest.approx(0.5, abs=1e-6) and S > 0.95
    print("region deletion", deletion[0].round(4), "insertion", insertion[0].round(4))

    # A given region (the top-left quadrant, e.g. a box) is kept as given: half of it goes in the first step.
    quadrant = np.zeros((SIZE, SIZE), dtype=bool)
    quadrant[:4, :4] = True
    box = RegionScore(1, torch.from_numpy(quadrant))
    index, deletion, insertion = trust.masked_curves(pixel_net(), "softmax", inputs, black, [RASTER], COUNTS, box)
    assert index == 1
    np.testing.assert_allclose(deletion[0], [S, 0.5, 1 - S, 1 - S, 1 - S], atol=1e-6)
    np.testing.assert_allclose(insertion[0], [1 - S, 0.5, S, S, S], atol=1e-6)


def test_deletion_insertion_of_a_segmentation_region_on_the_blurred_image() -> None:
    wide = 40  # blur sigma 2 px: one-pixel stripes blur to grey
    prep = Preprocessing(size=wide, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), keep_aspect=False)
    model = LoadedModel("tiny", "Tiny", pixel_net(), ("background", "object"), prep, "", (), segmentation=True)
    stripes = np.zeros((wide, wide, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # white even columns: the object's predicted region, 20 pixels per row
    heat = -np.arange(wide * wide, dtype=np.float32).reshape(wide, wide)  # hottest first = raster order
    curves = trust.deletion_insertion(model, Image.fromarray(stripes), heat, "object", steps=4, random_orders=2)

    inputs = to_input(Image.fromarray(stripes), prep)
    region = stripes[..., 0] > 0
    original = torch.sigmoid(3 * inputs[0, 0]).double().numpy()[region]  # p1 per pixel, a 1x1 convolution
    blurred = torch.sigmoid(3 * trust.blur_baseline(inputs)[0, 0]).double().numpy()[region]
    rows = np.nonzero(region)[0]
    counts = np.arange(5) * wide * wide // 4  # 0, 10, 20, 30 and 40 rows
    expected_deletion = np.array([np.where(rows < c // wide, blurred, original).mean() for c in counts])
    expected_insertion = np.array([np.where(rows < c // wide, original, blurred).mean() for c in counts])
    np.testing.assert_allclose(curves.fractions, counts / wide**2)
    np.testing.assert_allclose(curves.deletion, expected_deletion, atol=1e-6)
    np.testing.assert_allclose(curves.insertion, expected_insertion, atol=1e-6)
    assert curves.deletion_auc == pytest.approx(trust.curve_area(counts / wide**2, expected_deletion), abs=1e-6)
    assert curves.deletion[0] == pytest.approx(S, abs=1e-6) and 0.45 < blurred.mean() < 0.55  # grey
    for chance in (curves.random_deletion, curves.random_insertion[::-1]):  # same end points, whatever the order
        assert chance[0] == pytest.approx(S, abs=1e-6) and chance[-1] == pytest.approx(blurred.mean(), abs=1e-6)
    assert curves.target == 1 and isinstance(curves.objective, RegionScore)
    assert np.array_equal(curves.objective.mask.numpy(), region)  # the predicted region of the unmasked image
    print("blurred stripes: deletion", np.round(curves.deletion, 4), "AUC", round(curves.deletion_auc, 4),
          "random", round(curves.random_deletion_auc, 4))


def _left_then_right() -> np.ndarray:
    flat = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    return np.concatenate([flat[LEFT], flat[~LEFT]])


@pytest.mark.parametrize(
    ("objective", "activation", "expected"),
    [
        # Left then right deleted: the halves' means go 1, 0, -1; logits 2, 0, -2 (sigmoid 0.88, 0.5, 0.12).
        (WeightedClasses({0: 1.0, 1: 1.0}), "sigmoid",
         [(sigmoid(2) + sigmoid(2)) / 2, (0.5 + sigmoid(2)) / 2, (sigmoid(-2) + sigmoid(2)) / 2,
          (sigmoid(-2) + 0.5) / 2, sigmoid(-2)]),
        (WeightedClasses({0: 1.0, 1: 3.0}), "sigmoid",
         [sigmoid(2), (0.5 + 3 * sigmoid(2)) / 4, (sigmoid(-2) + 3 * sigmoid(2)) / 4, (sigmoid(-2) + 1.5) / 4,
          sigmoid(-2)]),
        (WeightedClasses({0: 1.0, 1: 1.0}), "softmax", [0.5] * 5),  # two softmax probabilities always add to 1
        (0, "sigmoid", [sigmoid(2), 0.5, sigmoid(-2), sigmoid(-2), sigmoid(-2)]),
    ],
)
def test_several_classes_together(objective, activation: str, expected: list[float]) -> None:
    inputs = to_input(picture(SIZE), PREP)  # all white
    black = torch.full_like(inputs, -1.0)
    index, deletion, insertion = trust.masked_curves(
        HalfMeans(), activation, inputs, black, [_left_then_right()], COUNTS, objective, batch_size=2
    )
    np.testing.assert_allclose(deletion[0], expected, atol=1e-6)
    assert index == (0 if objective == 0 else max(objective.weights, key=lambda pair: pair[1])[0])
    np.testing.assert_allclose(insertion[0, [0, -1]], [expected[-1], expected[0]], atol=1e-6)
    if objective == WeightedClasses({0: 1.0, 1: 1.0}) and activation == "sigmoid":
        # Revealing the left half first: (sigmoid(-2) + sigmoid(-2)) / 2, then left 0 ... as deletion mirrored.
        np.testing.assert_allclose(insertion[0], expected[::-1], atol=1e-6)


def test_a_binary_models_negative_side() -> None:
    inputs = to_input(picture(SIZE), PREP)
    black = torch.full_like(inputs, -1.0)
    curves = {
        side: trust.masked_curves(MeanLogit(), "softmax", inputs, black, [RASTER], COUNTS, BinaryLogit(side))
        for side in (True, False)
    }
    means = 1 - 2 * COUNTS / 64  # the input's mean after deleting COUNTS pixels
    np.testing.assert_allclose(curves[True][1][0], [sigmoid(2 * m) for m in means], atol=1e-6)
    np.testing.assert_allclose(curves[False][1][0], [sigmoid(-2 * m) for m in means], atol=1e-6)
    np.testing.assert_allclose(curves[False][2][0], [sigmoid(2 * m) for m in means], atol=1e-6)  # insertion

    # Through deletion_insertion: the default is the logit (as explain's), and the two sides add up to 1.
    model = loaded(MeanLogit(), ("pneumonia",))
    heat = np.random.default_rng(0).random((SIZE, SIZE))
    default = trust.deletion_insertion(model, picture(3), heat, steps=4)
    negative = trust.deletion_insertion(model, picture(3), heat, BinaryLogit(False), steps=4)
    assert default.objective == BinaryLogit(True)
    assert default.deletion[0] == pytest.approx(sigmoid(2 * (3 - 5) / 8), abs=1e-6)  # 3 white, 5 black columns
    for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
        np.testing.assert_allclose(getattr(default, name) + getattr(negative, name), 1.0, atol=1e-6)
    assert negative.deletion_auc == pytest.approx(1 - default.deletion_auc, abs=1e-6)
    print("binary: positive deletion AUC", round(default.deletion_auc, 4), "negative", round(negative.deletion_auc, 4))


# ----------------------------------------------------------------------------------- one class, as before


def small_classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()


@pytest.mark.parametrize(("target", "activation"), [(2, "softmax"), (None, "softmax"), (3, "sigmoid")])
def test_one_class_gives_the_class_only_numbers(target: int | None, activation: str) -> None:
    """The class-only rule, written out: each masked image scored alone, ``probabilities(logits)[class]``."""
    prep = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), multiple=8)
    model = LoadedModel("cls", "Classifier", small_classifier(), tuple("abcde"), prep, "0", (), activation=activation)
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    heat = rng.random((16, 24)).astype(np.float32)
    curves = trust.deletion_insertion(model, image, heat, target, steps=5, seed=3, random_cell=8, random_orders=2,
                                      batch_size=1)
    same = trust.deletion_insertion(model, image, heat, ClassScore(curves.target), steps=5, seed=3, random_cell=8,
                                    random_orders=2, batch_size=1)

    inputs = to_input(image, prep)
    blurred = trust.blur_baseline(inputs)
    order_rng = np.random.default_rng(3)
    orders = [trust.hottest_first(order_rng, heat)]
    orders += [trust.random_order(order_rng, (16, 24), (2, 3)) for _ in range(2)]
    counts = np.round(np.arange(6) * 384 / 5).astype(np.int64)

    def score(x: Tensor) -> Tensor:
        with torch.no_grad():
            return probabilities(model.model(x), activation)[0]

    index = int(score(inputs).argmax()) if target is None else target
    reference = {"deletion": [], "insertion": []}
    for order in orders:
        rank = np.empty(384, dtype=np.int64)
        rank[order] = np.arange(384)
        for name, first, rest in (("deletion", blurred, inputs), ("insertion", inputs, blurred)):
            curve = []
            for count in counts:
                taken = torch.from_numpy((rank < count).reshape(1, 1, 16, 24))
                curve.append(float(score(torch.where(taken, first, rest))[index]))
            reference[name].append(curve)
    assert curves.target == index
    for name in ("deletion", "insertion"):
        np.testing.assert_allclose(getattr(curves, name), reference[name][0], rtol=0, atol=1e-7)
        np.testing.assert_allclose(getattr(curves, f"random_{name}"), np.mean(reference[name][1:], axis=0),
                                   rtol=0, atol=1e-7)
        np.testing.assert_array_equal(getattr(curves, name), getattr(same, name))
    print("class", index, activation, "deletion", np.round(curves.deletion, 4))


# ----------------------------------------------------------------------------------------------- sanity check


def seeded_segmenter() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1)).eval()


def test_the_randomised_copy_explains_the_real_models_region() -> None:
    model = loaded(seeded_segmenter(), ("a", "b", "c"), segmentation=True)
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    inputs = to_input(image, PREP)
    with torch.no_grad():
        output = model.model(inputs)
    index = int(torch.bincount(output.argmax(dim=1).flatten(), minlength=3).argmax())  # predicted most
    region = predicted_mask(output, index)[0]
    copy = trust.randomized_copy(model, "0", seed=1)
    with torch.no_grad():
        own_region = predicted_mask(copy.model(inputs), index)[0]
    assert region.sum() == 55 and not own_region.any()  # the copy predicts the class nowhere: redrawn on the
    with pytest.raises(TargetError, match="selects no pixel"):  # copy, the region could not even be explained
        trace_cam(copy.model, inputs, "0", index)

    check = trust.sanity_check(model, image, "0", index, randomized=copy)
    fixed = RegionScore(index, region)
    assert check.target == index and isinstance(check.objective, RegionScore)
    assert torch.equal(check.objective.mask, region)
    np.testing.assert_array_equal(check.real_map, trace_cam(model.model, inputs, "0", fixed).cam[0].numpy())
    np.testing.assert_array_equal(check.random_map, trace_cam(copy.model, inputs, "0", fixed).cam[0].numpy())
    boxed = trust.sanity_check(model, image, "0", RegionScore(index, torch.from_numpy(LEFT)), randomized=copy)
    box = RegionScore(index, torch.from_numpy(LEFT))
    np.testing.assert_array_equal(boxed.random_map, trace_cam(copy.model, inputs, "0", box).cam[0].numpy())
    print("region pixels: real", int(region.sum()), "copy's own", int(own_region.sum()), "rho", check.similarity,
          "box rho", boxed.similarity)


def test_the_sanity_check_of_classes_together_and_of_one_class() -> None:
    model = LoadedModel("cls", "Classifier", small_classifier(), tuple("abcde"), PREP, "0", (), activation="sigmoid")
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    inputs = to_input(image, PREP)
    copy = trust.randomized_copy(model, "0", seed=1)
    together = WeightedClasses({1: 1.0, 4: 1.0})
    check = trust.sanity_check(model, image, "0", together, randomized=copy)
    assert check.objective == together and check.target == 1
    np.testing.assert_array_equal(check.real_map, trace_cam(model.model, inputs, "0", together).cam[0].numpy())
    np.testing.assert_array_equal(check.random_map, trace_cam(copy.model, inputs, "0", together).cam[0].numpy())
    alone = trust.sanity_check(model, image, "0", 4, randomized=copy)  # one class: as before
    assert alone.target == 4 and alone.objective == ClassScore(4)
    np.testing.assert_array_equal(alone.real_map, trace_cam(model.model, inputs, "0", 4).cam[0].numpy())
    np.testing.assert_array_equal(alone.random_map, trace_cam(copy.model, inputs, "0", 4).cam[0].numpy())
    assert not np.array_equal(check.random_map, alone.random_map)
