"""Which feature maps the teaching view shows, and what a cached explanation keeps of them."""

from __future__ import annotations

import numpy as np

from gradcam_core import CamSteps
from gradcam_core.teaching import top_channels

TILES = 8
"""Feature maps shown per ordering in the teaching view."""
ACTIVATION_BUDGET = 2**19
"""Most activation values (2 MB of float32) a cached explanation keeps; beyond, only the shown tiles' maps."""
RANKINGS: dict[str, tuple[str, str]] = {
    "largest weights": ("weights", "largest"),
    "most negative weights": ("weights", "smallest"),
    "largest contributions": ("contributions", "largest"),
}
"""How the teaching view can pick its tiles: ``CamSteps`` field and ``top_channels`` order."""


def keep_tiles(steps: CamSteps) -> CamSteps:
    """``steps`` whole when small; else only the feature maps the teaching view can show (weights stay whole).

    Example: ``keep_tiles(core.cam_steps(found.trace))`` before caching an explanation.
    """
    if steps.activations.size <= ACTIVATION_BUDGET:
        return steps
    return steps.keep(np.unique(np.concatenate([tile_channels(steps, ranking) for ranking in RANKINGS])))


def tile_channels(steps: CamSteps, ranking: str) -> np.ndarray:
    """The ``TILES`` channels first in ``ranking`` (a key of ``RANKINGS``), first one first.

    Example: ``tile_channels(steps, "largest weights")  # array of 8 channel indices``.
    """
    field, order = RANKINGS[ranking]
    return top_channels(getattr(steps, field), TILES, order)
