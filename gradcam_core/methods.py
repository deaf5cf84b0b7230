"""CAM methods: how activations A and gradients dA of the target layer become per-location weights.

Every method here is a pure function ``(activations, gradients) -> weights`` whose result broadcasts against
the activations ``(N, K, h, w)``; the map is then ``ReLU(sum_k weights_k * A^k)``. Adding a gradient-based
method is adding one function and one registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
