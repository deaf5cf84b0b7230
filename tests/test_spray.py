"""SpRAy and heat statistics on synthetic maps (no model, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from gradcam_core.errors import AuditError
from gradcam_core.heat import Region, heat_stats, parse_region
from gradcam_core.spray import eigengap, spray


def _blob(centre: tuple[float, float], rng: np.random.Generator, size: int = 14, width: float = 1.5) -> np.ndarray:
    """A Gaussian blob at ``centre`` (row, col in cells) with a little noise, like a 14x14 Grad-CAM map."""
    rows, cols = np.mgrid[:size, :size]
    row, col = centre[0] + rng.normal(0, 0.4), centre[1] + rng.normal(0, 0.4)
    blob = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * width**2))
    return (blob + rng.uniform(0, 0.02, blob.shape)).astype(np.float32)


def _ring(rng: np.random.Generator, size: int = 14) -> np.ndarray:
    ring = np.zeros((size, size), np.float32)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = 1.0
    return ring + rng.uniform(0, 0.02, ring.shape).astype(np.float32)


def test_two_planted_strategies_give_two_clusters_and_the_corner_one_is_flagged() -> None:
    rng = np.random.default_rng(0)
    centre = [_blob((7, 7), rng) for _ in range(12)]
    corner = [_blob((1, 1), rng, width=1.0) for _ in range(8)]
    maps = centre + corner
    correct = [True] * 12 + [True, False] * 4
    found = spray(maps, correct, target="horse")
    assert eigengap(found.eigenvalues) == 2 and len(found.clusters) == 2
    big, small = found.clusters
    assert set(big.members) == set(range(12)) and set(small.members) == set(range(12, 20))
    assert big.flags == () and "corner:top_left" in small.flags  # a corner is also on the border
    assert small.accuracy == pytest.approx(0.5) and big.accuracy == 1.0
    assert small.corner == "top_left" and small.corner_share > 0.5
    assert np.unravel_index(np.argmax(small.mean_map), small.mean_map.shape) < (3, 3)
    assert small.mean_map.max() == pytest.approx(1.0)
    assert list(found.assignments[:12]) == [0] * 12 and list(found.assignments[12:]) == [1] * 8
    assert len(small.typical) == 5 and small.target == "horse"


def test_border_heat_is_flagged_and_the_object_box_flags_heat_outside_it() -> None:
    rng = np.random.default_rng(1)
    found = spray([_ring(rng) for _ in range(6)])
    assert found.clusters[0].flags == ("border",)
    right = [_blob((7, 12), rng) for _ in range(6)]
    assert spray(right).clusters[0].flags == ()
    boxed = spray(right, object_box=Region("object", 0.0, 0.0, 0.5, 1.0))
    assert "outside" in boxed.clusters[0].flags and boxed.clusters[0].outside_share > 0.9


def test_one_homogeneous_strategy_is_one_cluster_and_small_inputs_work() -> None:
    rng = np.random.default_rng(2)
    assert eigengap(np.array([0.0, 0.0, 0.9, 0.95])) == 2
    assert eigengap(np.array([0.0, 0.8, 0.85, 0.9])) == 1
    assert len(spray([_blob((7, 7), rng)]).clusters) == 1
    assert spray([_blob((7, 7), rng), _blob((2, 2), rng)]).clusters[0].size == 2
    with pytest.raises(AuditError, match="at least one map"):
        spray([])


def test_heat_stats_peak_border_corner_and_regions() -> None:
    raw = np.zeros((8, 8), np.float32)
    raw[0, 0] = 1.0
    stats = heat_stats(raw, [parse_region("tag=0,0,0.25,0.25"), Region("rest", 0.25, 0.25, 1.0, 1.0)])
    assert (stats.peak_x, stats.peak_y) == (1 / 16, 1 / 16)
    assert stats.corner == "top_left" and stats.corner_share > 0.95 and stats.border_share > 0.9
    assert stats.regions["tag"] > 0.95 and stats.regions["rest"] < 0.05
    uniform = heat_stats(np.ones((7, 7), np.float32))
    assert uniform.border_share == pytest.approx(0.36, abs=0.01)
    assert uniform.corner_share == pytest.approx(0.04, abs=0.005)


@pytest.mark.parametrize("text", ["tag", "tag=0,0,1", "tag=0.5,0,0.2,1", "bad name=0,0,1,1", "t=a,b,c,d"])
def test_bad_regions_are_refused_in_one_sentence(text: str) -> None:
    with pytest.raises(AuditError, match=r"^[A-Z].*\.$"):
        parse_region(text)
