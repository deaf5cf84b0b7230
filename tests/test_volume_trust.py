"""The 3-D deletion check on a hand-set model whose score reads one bright cube: exact curve values, the random
order recomputed by hand, batches, progress and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradcam_core.errors import TargetError, TrustCheckError
from gradcam_core.trust import hottest_first, random_order
from gradcam_core.volume_models import LoadedVolumeModel, VolumePreprocessing
from gradcam_core.volume_trust import volume_deletion
from gradcam_core.volumes import Volume

SIDE = 8
CUBE = (slice(2, 4),) * 3  # 8 of the 512 voxels
MEAN = 8 / 512  # the baseline: the input's mean


class CubeScore(nn.Module):
    """Two classes with logits (4 (s - 1/2), 0), s = mean of channel 0 over CUBE: p = sigmoid(4 s - 2)."""

    def forward(self, x: Tensor) -> Tensor:
        s = x[:, 0][(slice(None), *CUBE)].mean(dim=(1, 2, 3))
        return torch.stack([4 * (s - 0.5), torch.zeros_like(s)], dim=1)


def p(s: float) -> float:
    return 1 / (1 + math.exp(-(4 * s - 2)))


@pytest.fixture(scope="module")
def cube_model() -> LoadedVolumeModel:
    # A window of (0.5, 1) maps the voxels 0 and 1 to themselves; the grid is the scan's, so no resize changes them.
    prep = VolumePreprocessing((SIDE, SIDE, SIDE), "window", (0.5, 1.0))
    return LoadedVolumeModel("cube", "Cube score", CubeScore().eval(), ("cube", "rest"), prep, "", ())


@pytest.fixture(scope="module")
def cube_scan() -> Volume:
    voxels = np.zeros((SIDE, SIDE, SIDE), np.float32)
    voxels[CUBE] = 1.0
    return Volume(voxels, np.eye(4), "NumPy")


def _layer_map() -> np.ndarray:
    """A 4 x 4 x 4 map hot on the cell over the cube: enlarged trilinearly, its 8 hottest voxels are the cube's."""
    heat = np.zeros((4, 4, 4), np.float32)
    heat[1, 1, 1] = 1.0
    return heat


def test_deleting_the_cube_first_drops_the_score_to_the_baselines_first(cube_model, cube_scan) -> None:
    curve = volume_deletion(cube_scan, cube_model, _layer_map(), 0)
    counts = np.array([0, 5, 10, 26, 51, 102, 256, 512])  # 0, 1, 2, 5, 10, 20, 50, 100 % of 512, rounded
    np.testing.assert_allclose(curve.fractions, counts / 512)
    # 5 of the cube's 8 voxels deleted (1 %), then all of them (2 %): nothing else is read by the score.
    expected = [p(1.0), p((3 + 5 * MEAN) / 8)] + [p(MEAN)] * 6
    np.testing.assert_allclose(curve.deletion, expected, atol=1e-6)
    assert curve.deletion[0] == pytest.approx(0.8807971, abs=1e-6)
    assert curve.deletion[-1] == pytest.approx(0.1259228, abs=1e-6)
    x = curve.fractions
    area = sum((a + b) / 2 * (x1 - x0) for a, b, x0, x1 in zip(expected, expected[1:], x, x[1:]))
    assert curve.deletion_auc == pytest.approx(area, abs=1e-7)  # the model computes in float32
    assert curve.deletion_auc == pytest.approx(0.1321559, abs=1e-6)

    # The random order by hand: the same seeded draws, the cube's voxels counted among the first deleted.
    rng = np.random.default_rng(0)
    hottest_first(rng, np.zeros((SIDE,) * 3))
    order = random_order(rng, (SIDE,) * 3, (4, 4, 4))
    in_cube = np.zeros((SIDE,) * 3, bool)
    in_cube[CUBE] = True
    gone = [int(in_cube.ravel()[order[:n]].sum()) for n in counts]
    np.testing.assert_allclose(curve.random_deletion, [p((8 - g + g * MEAN) / 8) for g in gone], atol=1e-6)
    assert curve.random_deletion[0] == curve.deletion[0] and curve.random_deletion[-1] == curve.deletion[-1]
    assert curve.random_deletion_auc > curve.deletion_auc + 0.2 and curve.beats_random
    assert curve.target == 0 and curve.voxels == 512


def test_batches_and_progress_do_not_change_the_curve(cube_model, cube_scan) -> None:
    seen = []
    one = volume_deletion(cube_scan, cube_model, _layer_map(), batch_size=1)
    four = volume_deletion(cube_scan, cube_model, _layer_map(), batch_size=4,
                           progress=lambda done, total: seen.append((done, total)))
    assert one.target == 0  # the top class by default
    np.testing.assert_array_equal(one.deletion, four.deletion)
    np.testing.assert_array_equal(one.random_deletion, four.random_deletion)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the original and baseline, then 12 masked inputs by 4
    other_seed = volume_deletion(cube_scan, cube_model, _layer_map(), seed=3)
    np.testing.assert_array_equal(other_seed.deletion, one.deletion)  # the cube goes first whatever the seed


@pytest.mark.parametrize(
    ("raw_map", "options", "error"),
    [
        (np.ones((4, 4)), {}, TrustCheckError),
        (np.full((2, 2, 2), np.nan), {}, TrustCheckError),
        (np.ones((2, 2, 2)), {"fractions": (0.1, 1.0)}, TrustCheckError),
        (np.ones((2, 2, 2)), {"fractions": (0.0, 0.5, 0.5, 1.0)}, TrustCheckError),
        (np.ones((2, 2, 2)), {"batch_size": 0}, TrustCheckError),
        (np.ones((2, 2, 2)), {"target": 5}, TargetError),
    ],
)
def test_bad_inputs_are_one_sentence(cube_model, cube_scan, raw_map, options, error) -> None:
    with pytest.raises(error) as caught:
        volume_deletion(cube_scan, cube_model, raw_map, **options)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")
