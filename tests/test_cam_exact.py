"""Grad-CAM against values computed by hand on tiny fixed-weight models (paper: Selvaraju et al., eq. 1-2)."""

from __future__ import annotations

import pytest
import torch

from gradcam_core import compute_cam, trace_cam
from tests.tiny_models import A0, A1, feature_input, gap_linear_model, squared_sum_model

W = [[1.0, -1.0], [2.0, 0.5]]  # class 0 = A0 - A1 evidence, class 1 = 2 A0 + 0.5 A1


def test_gap_linear_class0_by_hand() -> None:
    # alpha = W[0] / Z = [0.25, -0.25]; sum = 0.25 (A0 - A1) = [[-.75, -.25], [.25, .75]]; ReLU.
    cam = compute_cam(gap_linear_model(W), feature_input(A0, A1), "layer", targets=0)
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 0.0], [0.25, 0.75]]]), rtol=0, atol=1e-7)


def test_gap_linear_class1_by_hand() -> None:
    # alpha = [0.5, 0.125]; 0.5 A0 + 0.125 A1.
    cam = compute_cam(gap_linear_model(W), feature_input(A0, A1), "layer", targets=1)
    torch.testing.assert_close(cam, torch.tensor([[[1.0, 1.375], [1.75, 2.125]]]), rtol=0, atol=1e-7)


def test_default_target_is_top1() -> None:
    model = gap_linear_model(W)
    x = feature_input(A0, A1)  # logits: class 0 = 0, class 1 = 2 * 2.5 + 0.5 * 2.5 = 6.25
    trace = trace_cam(model, x, "layer")
    assert trace.targets.tolist() == [1]
    torch.testing.assert_close(trace.scores, torch.tensor([6.25]))


def test_weights_and_pre_relu_sum_are_exposed() -> None:
    trace = trace_cam(gap_linear_model(W), feature_input(A0, A1), "layer", targets=0)
    torch.testing.assert_close(trace.weights.flatten(), torch.tensor([0.25, -0.25]))
    torch.testing.assert_close(trace.weighted_sum, torch.tensor([[[-0.75, -0.25], [0.25, 0.75]]]))
    torch.testing.assert_close(trace.activations, feature_input(A0, A1))
    torch.testing.assert_close(trace.gradients, torch.tensor([[[[0.25] * 2] * 2, [[-0.25] * 2] * 2]]))


def test_counterfactual_negates_gradients() -> None:
    # Paper sec. 3.3: weights of -dy/dA; ReLU(-0.25 (A0 - A1)) = [[.75, .25], [0, 0]].
    cam = compute_cam(gap_linear_model(W), feature_input(A0, A1), "layer", targets=0, method="counterfactual")
    torch.testing.assert_close(cam, torch.tensor([[[0.75, 0.25], [0.0, 0.0]]]), rtol=0, atol=1e-7)


def test_weights_are_mean_gradients_not_weights_of_a_linear_head() -> None:
    # y = sum(A0^2)/2 -> dy/dA0 = A0, alpha_0 = mean(A0) = 2.5, alpha_1 = 0 -> map = 2.5 A0.
    cam = compute_cam(squared_sum_model(), feature_input(A0, A1), "layer", targets=0)
    torch.testing.assert_close(cam, torch.tensor([[[2.5, 5.0], [7.5, 10.0]]]))


def test_inplace_relu_after_layer_by_hand() -> None:
    # A0 = [[1,-2],[3,-4]], A1 = [[-1,2],[.5,1]]; class 0 = W [1, 1]: dy/dA = 1[A>0] / 4.
    # alpha = [2/16, 3/16]; sum = .125 A0 + .1875 A1 = [[-.0625, .125], [.46875, -.3125]].
    a0, a1 = [[1.0, -2.0], [3.0, -4.0]], [[-1.0, 2.0], [0.5, 1.0]]
    model = gap_linear_model([[1.0, 1.0], [0.0, 0.0]], inplace_relu=True)
    trace = trace_cam(model, feature_input(a0, a1), "layer", targets=0)
    torch.testing.assert_close(trace.cam, torch.tensor([[[0.0, 0.125], [0.46875, 0.0]]]))
    # the activations are the layer's output, not the in-place ReLU's result
    torch.testing.assert_close(trace.activations, feature_input(a0, a1))


def test_batch_with_one_target_per_image() -> None:
    model = gap_linear_model(W)
    x = torch.cat([feature_input(A0, A1), feature_input(A1, A0)])
    cam = compute_cam(model, x, "layer", targets=[0, 0])
    torch.testing.assert_close(cam[0], torch.tensor([[0.0, 0.0], [0.25, 0.75]]))
    torch.testing.assert_close(cam[1], torch.tensor([[0.75, 0.25], [0.0, 0.0]]))


def test_layer_given_as_module() -> None:
    model = gap_linear_model(W)
    by_name = compute_cam(model, feature_input(A0, A1), "layer", targets=0)
    by_module = compute_cam(model, feature_input(A0, A1), model.layer, targets=0)
    assert torch.equal(by_name, by_module)


@pytest.mark.parametrize("targets", [2, -1, [0, 1]])
def test_bad_targets_raise(targets) -> None:
    from gradcam_core import TargetError

    with pytest.raises(TargetError, match=r"(out of range|one per image)"):
        compute_cam(gap_linear_model(W), feature_input(A0, A1), "layer", targets=targets)
