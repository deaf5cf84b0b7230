"""Faithfulness of a 3-D map: does the class probability fall when the hottest voxels are deleted first?

The deletion curve of RISE (Petsiuk et al. 2018), with the masking and scoring of the images' check
(:func:`gradcam_core.trust.masked_curves`)::

    curve = volume_deletion(volume, loaded, result.raw_map, result.target.index)
    curve.deletion_auc < curve.random_deletion_auc      # the map's order drops the score faster than chance

* What is deleted: voxels of the model's input (the whole scan resized to the model's grid), ranked by the map
  enlarged to that grid as the views enlarge it (trilinear, ``align_corners=False``); voxels of equal heat in
  a seeded random order.
* Baseline: a deleted voxel takes the mean of the model input, channel by channel (0 after a z-score): one
  uniform value that keeps none of the deleted structure. The images' blurred copy would keep a large
  structure's core at 3-D input sizes (a blur of 1/20 of a 64-voxel side is 3 voxels), and a uniform value is
  the same for every scan. The last point (every voxel deleted) is the baseline's own probability.
* Steps: 0, 1, 2, 5, 10, 20, 50 and 100 % of the voxels (:data:`DELETION_FRACTIONS`): a compact lesion is a
  few percent of a scan, so the curve looks closely at the start. With one random order that is 14 inputs
  scored (the original and the baseline once, 6 masked inputs per order), in batches.
* Chance level: the same steps in a seeded random order made of the map's own cells: a random ``(d, h, w)`` map
  enlarged the same way, so only *where* the voxels go differs. The areas under the curves (trapezoid rule over
  the deleted share, 0 to 1) compare the two: lower is better.

Insertion is left out: revealing voxels on a uniform volume is a second pass of the same size, and deletion
alone answers whether the hottest voxels carry the score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .cam import masked_batch_size
from .errors import TrustCheckError
from .targets import resolve_class
from .trust import curve_area, hottest_first, masked_curves, random_order
from .volume_models import LoadedVolumeModel, volume_input
from .volumes import Volume

__all__ = ["DELETION_FRACTIONS", "DeletionCurve", "volume_deletion"]

DELETION_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Shares of the model input's voxels deleted at each step."""


@dataclass(frozen=True, eq=False)
class DeletionCurve:
    """The class probability as a 3-D map's hottest voxels are deleted, and the same for a random order.

    Attributes:
        fractions: Share of the input's voxels deleted at each step, from 0 to 1 (as rounded to whole voxels).
        deletion: Class probability at each step, hottest voxels first.
        random_deletion: The same for seeded random orders of the map's cells (their mean).
        deletion_auc: Area under ``deletion`` (lower is better).
        random_deletion_auc: Area under ``random_deletion``: the chance level.
        target: The class whose probability is measured.
        voxels: Voxels of the model input (each channel's).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    random_deletion: np.ndarray
    deletion_auc: float
    random_deletion_auc: float
    target: int
    voxels: int

    @property
    def beats_random(self) -> bool:
        """True when deleting the hottest voxels first drops the probability faster than the random order."""
        return self.deletion_auc < self.random_deletion_auc


def volume_deletion(
    volume: Volume,
    model: LoadedVolumeModel,
    raw_map: np.ndarray,
    target: int | str | None = None,
    *,
    fractions: Sequence[float] = DELETION_FRACTIONS,
    seed: int = 0,
    random_orders: int = 1,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DeletionCurve:
    """The deletion curve of ``raw_map`` for class ``target`` on ``volume``, and its random-order chance level.

    Example: ``volume_deletion(volume, loaded, explain_volume(volume, loaded).raw_map).beats_random``.

    Args:
        volume: The scan the map explains.
        model: What :func:`gradcam_core.volume_models.load_volume_model` returned.
        raw_map: ``(d, h, w)`` map covering the whole scan (``VolumeExplanation.raw_map``); only the order of its
            values matters, and its grid sets the random order's cells.
        target: Class index or name; default: the model's top class for the scan.
        fractions: Shares of the voxels deleted, increasing from 0 to 1.
        seed: Seeds the random orders and the order among voxels of equal heat.
        random_orders: Random orders averaged into the chance level.
        batch_size: Inputs per model call; default: as many as keep the largest activation small (as for
            Score-CAM, :func:`gradcam_core.cam.masked_batch_size`).
        progress: Called as ``progress(done, total)`` after each model call; an exception it raises (a user's
            cancel) stops the work.

    Raises:
        TrustCheckError: the map is not a finite 3-D array, the fractions do not rise from 0 to 1, or
            ``random_orders`` or ``batch_size`` is below 1.
        TargetError: the class is unknown.
    """
    heat = np.asarray(raw_map)
    if heat.ndim != 3 or heat.size == 0 or not np.isfinite(heat).all():
        raise TrustCheckError(f"The map must be a finite 3-D array (d, h, w), not of shape {heat.shape}.")
    steps = np.asarray(fractions, dtype=np.float64)
    if steps.ndim != 1 or len(steps) < 2 or steps[0] != 0 or steps[-1] != 1 or (np.diff(steps) <= 0).any():
        raise TrustCheckError("The deleted fractions must rise from 0 to 1, such as 0, 0.1, 0.5 and 1.")
    if random_orders < 1 or (batch_size is not None and batch_size < 1):
        raise TrustCheckError("Random orders and batch size must both be at least 1.")
    class_index = None if target is None else resolve_class(target, model.categories)
    inputs = volume_input(volume, model.preprocessing)
    baseline = inputs.mean(dim=(2, 3, 4), keepdim=True).expand_as(inputs)
    grid = tuple(inputs.shape[2:])
    enlarged = F.interpolate(torch.from_numpy(heat.astype(np.float32))[None, None], size=grid, mode="trilinear",
                             align_corners=False)[0, 0].numpy()
    rng = np.random.default_rng(seed)
    orders = [hottest_first(rng, enlarged)]
    orders += [random_order(rng, grid, heat.shape) for _ in range(random_orders)]
    voxels = enlarged.size
    counts = np.round(steps * voxels).astype(np.int64)
    class_index, deletions, _ = masked_curves(
        model.model, model.activation, inputs, baseline, orders, counts, class_index, insertion=False,
        batch_size=batch_size or masked_batch_size(model.model, inputs), progress=progress,
    )
    shares, chance = counts / voxels, deletions[1:].mean(axis=0)
    return DeletionCurve(
        fractions=shares,
        deletion=deletions[0],
        random_deletion=chance,
        deletion_auc=curve_area(shares, deletions[0]),
        random_deletion_auc=curve_area(shares, chance),
        target=class_index,
        voxels=voxels,
    )
