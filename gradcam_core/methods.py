"""CAM methods: how activations A and gradients dA of the target layer become per-location weights.

Every method here is a pure function ``(activations, gradients) -> weights`` whose result broadcasts against
the activations ``(N, K, h, w)``; the map is then ``ReLU(sum_k weights_k * A^k)``. Adding a gradient-based
method is adding one function and one registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import GradCamError

__all__ = ["CamMethod", "METHODS", "get_method"]

WeightFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class CamMethod:
    """A gradient-based CAM method.

    Attributes:
        name: Registry key, e.g. ``"gradcam"``.
        title: Name shown to users.
        description: One sentence on what the map shows.
        weights: ``(activations, gradients) -> weights`` broadcastable to ``(N, K, h, w)``.
    """

    name: str
    title: str
    description: str
    weights: WeightFn


def _gradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1): alpha_k = spatial mean of dy^c/dA^k."""
    del activations
    return gradients.mean(dim=(2, 3), keepdim=True)


def _counterfactual_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Counterfactual Grad-CAM (paper, sec. 3.3): the weights of the negated gradients."""
    return -_gradcam_weights(activations, gradients)


def _gradcam_pp_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): w_k = sum_ij a_ij ReLU(g_ij), with
    a_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab g_ij^3), and a_ij = 0 where the gradient is 0."""
    squared = gradients.pow(2)
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * gradients
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(gradients != 0, squared / safe, torch.zeros_like(squared))
    return (alpha * torch.relu(gradients)).sum(dim=(2, 3), keepdim=True)


def _xgradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, eq. 9): w_k = sum_ij (A_ij / sum_ab A_ab) g_ij (0 for an all-zero map)."""
    total = activations.sum(dim=(2, 3), keepdim=True)
    weighted = (activations * gradients).sum(dim=(2, 3), keepdim=True)
    return torch.where(total != 0, weighted / torch.where(total != 0, total, torch.ones_like(total)), 0.0)


def _hirescam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): the gradient itself, element-wise, instead of its spatial mean."""
    del activations
    return gradients


def _layercam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al. 2021, eq. 4): the positive part of the gradient, element-wise."""
    del activations
    return torch.relu(gradients)


METHODS: dict[str, CamMethod] = {
    method.name: method
    for method in (
        CamMethod(
            "gradcam",
            "Grad-CAM",
            "Regions whose features raise the class score.",
            _gradcam_weights,
        ),
        CamMethod(
            "counterfactual",
            "Counterfactual Grad-CAM",
            "Regions whose features lower the class score: removing them would make the model more confident.",
            _counterfactual_weights,
        ),
        CamMethod(
            "gradcam++",
            "Grad-CAM++",
            "Like Grad-CAM, with pixel-wise weights that bring out several instances of a class.",
            _gradcam_pp_weights,
        ),
        CamMethod(
            "xgradcam",
            "XGrad-CAM",
            "Like Grad-CAM, with gradients weighted by the activations they multiply.",
            _xgradcam_weights,
        ),
        CamMethod(
            "hirescam",
            "HiResCAM",
            "Gradient times activation at each location, so the map shows exactly what raised the score.",
            _hirescam_weights,
        ),
        CamMethod(
            "layercam",
            "LayerCAM",
            "Positive gradients times activations at each location; sharper maps at earlier layers.",
            _layercam_weights,
        ),
    )
}


def get_method(name: str) -> CamMethod:
    """Return the registered method called ``name``.

    Raises:
        GradCamError: if no such method is registered.
    """
    try:
        return METHODS[name.lower()]
    except KeyError:
        raise GradCamError(
            f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}."
        ) from None
