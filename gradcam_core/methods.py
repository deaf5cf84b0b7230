"""CAM methods: how the target layer's activations A (and gradients dA) become per-location weights.

Every method is a function ``CamInputs -> weights`` whose result broadcasts against the activations
``(N, K, *spatial)`` (``(h, w)`` for an image model, ``(d, h, w)`` for a 3-D one: every method reduces over all
spatial dimensions, one implementation for both); the map is then ``ReLU(sum_k weights_k * A^k)``. Adding a
method is adding one function and one registry entry. Gradient methods read ``inputs.gradients``; Score-CAM asks
the model about masked copies of the input through ``inputs.masked_scores``; Eigen-CAM reads the activations
only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import MethodError

__all__ = ["CamInputs", "CamMethod", "METHODS", "get_method"]


@dataclass(frozen=True)
class CamInputs:
    """What a method may use to weight the channels.

    Attributes:
        activations: ``(N, K, *spatial)`` the layer's output A.
        gradients: ``(N, K, *spatial)`` dy^c/dA of each image's target class score; ``None`` for a method that
            does not need them (``CamMethod.needs_gradients`` false), whose backward pass is skipped.
        masked_scores: ``maps (N, M, *spatial) -> (N, M)``: each image's target-class probability (softmax, or
            sigmoid for a multi-label model) when its input is multiplied by each map, upsampled to the input
            size and min-max scaled to [0, 1] (Score-CAM's masks); batched, reports progress.
    """

    activations: Tensor
    gradients: Tensor | None
    masked_scores: Callable[[Tensor], Tensor]


WeightFn = Callable[[CamInputs], Tensor]


@dataclass(frozen=True)
class CamMethod:
    """A CAM method.

    Attributes:
        name: Registry key, e.g. ``"gradcam"``.
        title: Name shown to users.
        description: One sentence on what the map shows.
        weights: ``CamInputs -> weights`` broadcastable to ``(N, K, *spatial)``.
        forward_passes: Whether the method runs the model once per channel (slow: show progress).
        nonnegative_weights: Whether its weights are never negative, so its map is positive only where the
            activations are: such a method explains an activated layer by default (``activated_layer``).
        use: One sentence on when to choose it.
        class_specific: Whether the map depends on the explained class (Eigen-CAM's does not).
        counter_evidence: Whether the map shows evidence *against* the class (counterfactual).
        elementwise: Whether its weights are maps ``(N, K, *spatial)`` that weight every location separately
            (HiResCAM, LayerCAM) rather than one number per channel ``(N, K, 1, 1)`` (``(N, K, 1, 1, 1)`` in 3-D).
        needs_gradients: Whether it reads ``CamInputs.gradients``; the others (Score-CAM, Eigen-CAM) also explain
            a model that can only be run, not differentiated (an ONNX graph through onnxruntime).
    """

    name: str
    title: str
    description: str
    weights: WeightFn
    forward_passes: bool = False
    use: str = ""
    nonnegative_weights: bool = False
    class_specific: bool = True
    counter_evidence: bool = False
    elementwise: bool = False
    needs_gradients: bool = True


def _spatial(x: Tensor) -> tuple[int, ...]:
    """The spatial dimensions of an ``(N, K, *spatial)`` tensor: ``(2, 3)``, or ``(2, 3, 4)`` for a volume."""
    return tuple(range(2, x.ndim))


def _gradcam_weights(inputs: CamInputs) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1): alpha_k = spatial mean of dy^c/dA^k."""
    return inputs.gradients.mean(dim=_spatial(inputs.gradients), keepdim=True)


def _counterfactual_weights(inputs: CamInputs) -> Tensor:
    """Counterfactual Grad-CAM (paper, sec. 3.3): the weights of the negated gradients."""
    return -_gradcam_weights(inputs)


def _gradcam_pp_weights(inputs: CamInputs) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): w_k = sum_ij a_ij ReLU(g_ij), with
    a_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab g_ij^3), and a_ij = 0 where the gradient is 0."""
    activations, gradients = inputs.activations, inputs.gradients
    squared = gradients.pow(2)
    dims = _spatial(activations)
    denominator = 2 * squared + activations.sum(dim=dims, keepdim=True) * squared * gradients
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(gradients != 0, squared / safe, torch.zeros_like(squared))
    return (alpha * torch.relu(gradients)).sum(dim=dims, keepdim=True)


def _xgradcam_weights(inputs: CamInputs) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, eq. 9): w_k = sum_ij (A_ij / sum_ab A_ab) g_ij (0 for an all-zero map)."""
    activations, gradients = inputs.activations, inputs.gradients
    dims = _spatial(activations)
    total = activations.sum(dim=dims, keepdim=True)
    weighted = (activations * gradients).sum(dim=dims, keepdim=True)
    return torch.where(total != 0, weighted / torch.where(total != 0, total, torch.ones_like(total)), 0.0)


def _hirescam_weights(inputs: CamInputs) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): the gradient itself, element-wise, instead of its spatial mean."""
    return inputs.gradients


def _layercam_weights(inputs: CamInputs) -> Tensor:
    """LayerCAM (Jiang et al. 2021, eq. 4): the positive part of the gradient, element-wise."""
    return torch.relu(inputs.gradients)


def _scorecam_weights(inputs: CamInputs) -> Tensor:
    """Score-CAM (Wang et al. 2020, alg. 1): alpha_k = probability of the class (softmax, or sigmoid for a
    multi-label model) for the input masked by the upsampled, min-max scaled A^k. Gradient-free; one forward
    pass per channel (batched)."""
    scores = inputs.masked_scores(inputs.activations)
    return scores.reshape(*scores.shape, *(1,) * (inputs.activations.ndim - 2))


def _eigencam_weights(inputs: CamInputs) -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): project A onto its first principal direction, i.e. weights = the
    first right singular vector of A reshaped to (h*w, K) (d*h*w for a volume); sign chosen so the map's sum is
    positive.
    Class-agnostic: it shows the dominant features, whatever the class."""
    activations = inputs.activations
    batch, channels = activations.shape[:2]
    flat = activations.reshape(batch, channels, -1).transpose(1, 2).double()  # (N, hw or dhw, K)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    direction = vh[:, 0, :]  # (N, K)
    sign = torch.sign((flat @ direction[:, :, None]).sum(dim=(1, 2)))
    direction = direction * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    return direction.to(activations.dtype).reshape(batch, channels, *(1,) * (activations.ndim - 2))


METHODS: dict[str, CamMethod] = {
    method.name: method
    for method in (
        CamMethod(
            "gradcam",
            "Grad-CAM",
            "Regions whose features raise the class score.",
            _gradcam_weights,
            use="The standard: start here.",
        ),
        CamMethod(
            "counterfactual",
            "Counterfactual Grad-CAM",
            "Regions whose features lower the class score: removing them would make the model more confident.",
            _counterfactual_weights,
            use="To see what argues against a class, e.g. why the model did not choose it.",
            counter_evidence=True,
        ),
        CamMethod(
            "gradcam++",
            "Grad-CAM++",
            "Like Grad-CAM, with pixel-wise weights that bring out several instances of a class.",
            _gradcam_pp_weights,
            use="When the image holds several objects of the class; it can shrink to the single strongest spot.",
            nonnegative_weights=True,
        ),
        CamMethod(
            "xgradcam",
            "XGrad-CAM",
            "Like Grad-CAM, with gradients weighted by the activations they multiply.",
            _xgradcam_weights,
            use="A better-founded variant of Grad-CAM; usually close to it.",
        ),
        CamMethod(
            "hirescam",
            "HiResCAM",
            "Gradient times activation at each location, so the map shows exactly what raised the score.",
            _hirescam_weights,
            use="When the map must add up to the score cell by cell; often broader than Grad-CAM.",
            elementwise=True,
        ),
        CamMethod(
            "layercam",
            "LayerCAM",
            "Positive gradients times activations at each location; sharper maps at earlier layers.",
            _layercam_weights,
            use="For earlier layers, where it gives finer maps than Grad-CAM.",
            nonnegative_weights=True,
            elementwise=True,
        ),
        CamMethod(
            "scorecam",
            "Score-CAM",
            "Weights each feature map by how much showing the model only that region raises the class "
            "probability; no gradients, one model run per channel (slow).",
            _scorecam_weights,
            use="To check a gradient map without gradients.",
            forward_passes=True,
            nonnegative_weights=True,
            needs_gradients=False,
        ),
        CamMethod(
            "eigencam",
            "Eigen-CAM",
            "The dominant pattern of the layer's features (first principal component); the same for every class.",
            _eigencam_weights,
            use="To see what the layer responds to most, whatever the class.",
            class_specific=False,
            needs_gradients=False,
        ),
    )
}


def get_method(name: str) -> CamMethod:
    """Return the registered method called ``name`` (any case): ``get_method("LayerCAM").elementwise  # True``.

    Raises:
        MethodError: if no such method is registered.
    """
    try:
        return METHODS[name.lower()]
    except KeyError:
        raise MethodError(
            f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}."
        ) from None
