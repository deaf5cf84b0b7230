"""Objectives (weighted classes, a binary logit, a segmentation's region): values by hand on tiny models,
hygiene, refusals, and segmentation networks end to end through explain."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from monai.networks.nets import UNet
from PIL import Image
from torch import Tensor, nn

from gradcam_core import ModelError, TargetError, assemble_model, compute_cam, explain, trace_cam
from gradcam_core.objectives import (
    BinaryLogit,
    ClassScore,
    RegionScore,
    WeightedClasses,
    as_objective,
    class_probabilities,
    default_objective,
    predicted_mask,
)
from gradcam_core.preprocess import Preprocessing
from tests.tiny_models import A0, A1, feature_input, gap_linear_model, identity_conv

W = [[1.0, -1.0], [2.0, 0.5]]
DIAGONAL = torch.tensor([[True, False], [False, True]])


def segmenter(weight: list[list[float]]) -> nn.Sequential:
    """layer (identity conv) -> 1×1 conv with ``weight`` (classes × 2): one score per class and pixel."""
    head = nn.Conv2d(2, len(weight), 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(weight)[:, :, None, None])
    return nn.Sequential(OrderedDict(layer=identity_conv(), head=head)).eval()


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# --- weighted classes ---------------------------------------------------------------------------------------

def test_weighted_classes_is_the_weighted_sum_of_the_pre_relu_maps() -> None:
    # Gradients are linear in the score: alpha = 1 * alpha^0 + 2 * alpha^1, so the pre-ReLU sums add alike:
    # [[-.75, -.25], [.25, .75]] + 2 * [[1, 1.375], [1.75, 2.125]] = [[1.25, 2.5], [3.75, 5]].
    model, x = gap_linear_model(W), feature_input(A0, A1)
    both = trace_cam(model, x, "layer", WeightedClasses({0: 1.0, 1: 2.0}))
    each = [trace_cam(model, x, "layer", c).weighted_sum for c in (0, 1)]
    torch.testing.assert_close(both.weighted_sum, each[0] + 2 * each[1])
    torch.testing.assert_close(both.weighted_sum, torch.tensor([[[1.25, 2.5], [3.75, 5.0]]]))
    torch.testing.assert_close(both.scores, torch.tensor([12.5]))  # 1 * 0 + 2 * 6.25
    assert both.targets.tolist() == [1]  # the heaviest class


def test_weighted_classes_probability_label_and_score_cam() -> None:
    logits = torch.tensor([[0.0, 6.25]])
    p0, p1 = torch.softmax(logits, 1)[0].tolist()
    objective = WeightedClasses({1: 2.0, 0: 1.0})
    assert objective.weights == ((0, 1.0), (1, 2.0))
    assert float(objective.probability(logits)) == pytest.approx((p0 + 2 * p1) / 3)
    assert objective.label(("cat", "dog")) == "cat + 2 × dog"
    # Score-CAM reads the objective's probability of each masked input: for one class it is that class's.
    model, x = gap_linear_model(W), feature_input(A0, A1)
    alone = compute_cam(model, x, "layer", WeightedClasses({1: 3.0}), method="scorecam")
    torch.testing.assert_close(alone, compute_cam(model, x, "layer", 1, method="scorecam"))


# --- a binary model's single logit --------------------------------------------------------------------------

def test_binary_logit_positive_is_grad_cam_negative_is_counterfactual() -> None:
    model, x = gap_linear_model([[1.0, -1.0]]), feature_input(A0, A1)  # one output: 0.25 (A0 - A1) summed
    positive = compute_cam(model, x, "layer", BinaryLogit(True))
    torch.testing.assert_close(positive, compute_cam(model, x, "layer", 0))
    torch.testing.assert_close(positive, torch.tensor([[[0.0, 0.0], [0.25, 0.75]]]))
    negative = compute_cam(model, x, "layer", BinaryLogit(False))
    torch.testing.assert_close(negative, compute_cam(model, x, "layer", BinaryLogit(True), method="counterfactual"))
    torch.testing.assert_close(negative, torch.tensor([[[0.75, 0.25], [0.0, 0.0]]]))


def test_binary_logit_is_the_default_of_a_single_output_and_reads_the_sigmoid() -> None:
    trace = trace_cam(gap_linear_model([[2.0, 0.0]]), feature_input(A0, A1), "layer")  # logit = 2 * 2.5 = 5
    assert trace.objective == BinaryLogit(True) and trace.targets.tolist() == [0]
    logits = torch.tensor([[5.0]])
    assert float(BinaryLogit(True).probability(logits)) == pytest.approx(float(torch.sigmoid(torch.tensor(5.0))))
    assert float(BinaryLogit(False).probability(logits)) == pytest.approx(float(torch.sigmoid(torch.tensor(-5.0))))
    assert BinaryLogit(False).label(("pneumonia",)) == "not pneumonia"


# --- a segmentation's region --------------------------------------------------------------------------------

def test_region_score_by_hand_on_one_channel() -> None:
    # S = A0 - A1 = [[-3, -1], [1, 3]]; y = S over the diagonal = -3 + 3 = 0; dy/dA0 = mask, dy/dA1 = -mask.
    # Grad-CAM: alpha = [.5, -.5]; .5 (A0 - A1) = [[-1.5, -.5], [.5, 1.5]]. HiResCAM: mask * S.
    model, x = segmenter([[1.0, -1.0]]), feature_input(A0, A1)
    trace = trace_cam(model, x, "layer", RegionScore(0, DIAGONAL))
    mask = DIAGONAL.float()
    torch.testing.assert_close(trace.gradients, torch.stack([mask, -mask])[None])
    torch.testing.assert_close(trace.scores, torch.tensor([0.0]))
    torch.testing.assert_close(trace.weighted_sum, torch.tensor([[[-1.5, -0.5], [0.5, 1.5]]]))
    torch.testing.assert_close(trace.cam, torch.tensor([[[0.0, 0.0], [0.5, 1.5]]]))
    hires = compute_cam(model, x, "layer", RegionScore(0, DIAGONAL), method="hirescam")
    torch.testing.assert_close(hires, torch.tensor([[[0.0, 0.0], [0.0, 3.0]]]))
    # one channel: its probability is the sigmoid, averaged over the region: (sigmoid(-3) + sigmoid(3)) / 2
    assert float(RegionScore(0, DIAGONAL).probability(model(x))) == pytest.approx(0.5)


def test_region_of_every_pixel_is_the_sum_over_the_image() -> None:
    model, x = segmenter([[1.0, 0.5], [-1.0, 2.0]]), feature_input(A0, A1)
    trace = trace_cam(model, x, "layer", RegionScore(1, torch.ones(2, 2)))
    torch.testing.assert_close(trace.scores, model(x)[:, 1].sum(dim=(1, 2)))
    torch.testing.assert_close(trace.gradients, torch.tensor([-1.0, 2.0])[None, :, None, None].expand(1, 2, 2, 2))


def test_a_mask_at_another_size_is_resized_with_nearest_neighbours() -> None:
    model, x = segmenter([[1.0, -1.0]]), feature_input(A0, A1)
    big = DIAGONAL.repeat_interleave(3, 0).repeat_interleave(3, 1)  # 6×6
    torch.testing.assert_close(
        compute_cam(model, x, "layer", RegionScore(0, big)), compute_cam(model, x, "layer", RegionScore(0, DIAGONAL))
    )


def test_predicted_mask_default_and_int_targets_of_a_segmentation() -> None:
    model, x = segmenter([[1.0, 0.0], [0.0, 1.0]]), feature_input(A0, A1)  # class 1 wins where A1 > A0
    output = model(x)
    assert predicted_mask(output, 1).tolist() == [[[True, True], [False, False]]]
    assert predicted_mask(segmenter([[1.0, -1.0]])(x), 0).tolist() == [[[False, False], [True, True]]]
    objective = as_objective(1, output)
    assert isinstance(objective, RegionScore) and objective.index == 1
    assert torch.equal(objective.mask, predicted_mask(output, 1))
    default = default_objective(output)  # mean probabilities are equal: the first class
    assert isinstance(default, RegionScore) and default.index == 0
    torch.testing.assert_close(class_probabilities(output).sum(), torch.tensor(1.0))


def test_score_cam_scores_the_region_probability() -> None:
    model, x = segmenter([[1.0, 0.0], [0.0, 1.0]]), feature_input(A0, A1)
    cam = compute_cam(model, x, "layer", RegionScore(1, DIAGONAL), method="scorecam")
    assert cam.shape == (1, 2, 2) and torch.isfinite(cam).all() and cam.max() > 0


# --- hygiene ------------------------------------------------------------------------------------------------

class _Counted(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        _Counted.calls += 1
        return grad


class _Watch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grad_mode: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.grad_mode.append(torch.is_grad_enabled())
        return _Counted.apply(x)


@pytest.mark.parametrize(
    "objective", [RegionScore(1, torch.ones(12, 12)), RegionScore(0, torch.ones(2, 12, 12) > 0)]
)
def test_region_backward_is_partial_and_leaves_nothing(objective: RegionScore) -> None:
    before, after = _Watch(), _Watch()
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), before, nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1), after
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    _Counted.calls = 0
    compute_cam(model, x, "2", objective)
    assert before.grad_mode == [False] and after.grad_mode == [True]
    assert _Counted.calls == 1
    assert _hook_count(model) == 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("objective", "error", "message"),
    [
        (lambda: RegionScore(0, torch.ones(1, 1, 4, 4)), TargetError, r"^A region mask must be \(height, width\)"),
        (lambda: RegionScore(0, torch.ones(3, 4, 4)), TargetError, r"^Got 3 region masks for a batch of 1"),
        (lambda: RegionScore(5, torch.ones(4, 4)), TargetError, r"^Class index 5 is out of range; this model has 3"),
        (lambda: RegionScore(0, torch.zeros(4, 4)), TargetError, r"^The region selects no pixel"),
        (lambda: WeightedClasses({}), TargetError, r"^A weighted combination of classes needs at least one class\.$"),
        (lambda: ClassScore(0), ModelError, r"^The model must return class scores of shape \(batch, classes\)"),
        (lambda: [0, 1], TargetError, r"^A segmentation is explained for one class at a time"),
    ],
)
def test_refusals_leave_no_hook(objective, error, message) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    with pytest.raises(error, match=message):
        compute_cam(model, torch.randn(1, 3, 4, 4), "1", objective())
    assert _hook_count(model) == 0


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        (WeightedClasses({0: 1.0, 7: 1.0}), r"^Class index 7 is out of range; this model has 2 classes"),
        (BinaryLogit(True), r"^A binary logit needs a model with one output, not 2; explain a class instead\.$"),
    ],
)
def test_classifier_refusals(objective, message) -> None:
    model = gap_linear_model(W)
    with pytest.raises(TargetError, match=message):
        compute_cam(model, feature_input(A0, A1), "layer", objective)
    assert _hook_count(model) == 0


def test_existing_targets_become_class_scores() -> None:
    trace = trace_cam(gap_linear_model(W), torch.cat([feature_input(A0, A1)] * 2), "layer", [0, 1])
    assert trace.objective == ClassScore((0, 1)) and trace.targets.tolist() == [0, 1]


# --- segmentation networks end to end -----------------------------------------------------------------------

CLASSES = ("background", "organ", "tumour")
PREPROCESSING = Preprocessing(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, multiple=16)


def _picture() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _segmentation_models() -> dict[str, nn.Module]:
    seg = torchvision.models.segmentation
    return {
        "fcn": seg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False),
        "deeplab": seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3),
        "lraspp": seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3),
        "unet": UNet(spatial_dims=2, in_channels=3, out_channels=3, channels=(4, 8, 16), strides=(2, 2)),
    }


@pytest.mark.parametrize(
    ("name", "layer"),
    [("fcn", "classifier.2"), ("deeplab", "classifier.3"), ("lraspp", "classifier.cbr"), ("unet", None)],
)
def test_segmentation_models_through_explain(name: str, layer: str | None) -> None:
    torch.manual_seed(0)
    loaded = assemble_model(_segmentation_models()[name], CLASSES, PREPROCESSING, name=name, title=name)
    assert loaded.segmentation
    assert layer is None or loaded.default_layer == layer
    assert loaded.default_layer in {info.name for info in loaded.layers}
    result = explain(_picture(), loaded)
    assert result.input_size == (32, 48)
    assert sorted(p.index for p in result.predictions) == [0, 1, 2]
    assert sum(p.probability for p in result.predictions) == pytest.approx(1.0, abs=1e-5)
    assert result.target.label == f"{CLASSES[result.target.index]} (region)"
    assert result.segmentation.shape == result.region.shape == (32, 48)
    assert np.array_equal(result.region, result.segmentation == result.target.index)
    assert result.heatmap.shape == (32, 48) and np.isfinite(result.raw_map).all()
    assert result.trace is None and _hook_count(loaded.model) == 0


def test_a_region_drawn_on_the_picture_is_explained() -> None:
    torch.manual_seed(0)
    unet = UNet(spatial_dims=2, in_channels=3, out_channels=3, channels=(4, 8, 16), strides=(2, 2))
    loaded = assemble_model(unet, CLASSES, PREPROCESSING, name="unet", title="UNet")
    box = np.zeros((32, 48), dtype=bool)  # drawn at the picture's size (here the input's)
    box[8:20, 10:30] = True
    result = explain(_picture(), loaded, target=RegionScore(2, torch.from_numpy(box)), keep_trace=True)
    assert np.array_equal(result.region, box) and result.target.index == 2
    assert result.score == pytest.approx(float(result.trace.logits[0, 2][torch.from_numpy(box)].sum()), rel=1e-5)
    scored = explain(_picture(), loaded, target="tumour", method="scorecam")
    assert scored.target.label == "tumour (region)" and 0.0 <= scored.target.probability <= 1.0


def test_classifiers_are_not_segmentation() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    loaded = assemble_model(model, "abcd", Preprocessing(size=64), name="r", title="r")  # layer4: 2×2
    assert not loaded.segmentation and loaded.default_layer == "layer4"
    result = explain(_picture(), loaded, target=WeightedClasses({1: 1.0, 3: 1.0}))
    assert result.target.label == "b + d" and result.segmentation is None and result.region is None
