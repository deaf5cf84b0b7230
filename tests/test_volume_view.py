"""gradcam_core.volume_view: planes and projections of a 3-D map against PyTorch's trilinear upsampling, the
peak, the window, and the planes' orientation and aspect ratio on screen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gradcam_core.dicom import Window
from gradcam_core.errors import RenderError
from gradcam_core.volume_view import (
    map_peak,
    map_projection,
    map_slice,
    map_volume,
    plane_of,
    plane_picture,
    projection_picture,
    scan_slice,
)
from gradcam_core.volumes import Volume

RAS = np.eye(4)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # a DICOM axial series: columns toward the left, rows toward the back


def _upsampled(raw_map: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """The reference: the whole map enlarged by PyTorch, divided by its maximum."""
    full = F.interpolate(torch.from_numpy(raw_map)[None, None].double(), size=grid, mode="trilinear",
                         align_corners=False)[0, 0].numpy()
    return full / raw_map.max()


def _volume(shape: tuple[int, int, int], affine: np.ndarray = RAS, values: np.ndarray | None = None) -> Volume:
    return Volume(voxels=np.zeros(shape, np.float32) if values is None else values, affine=affine, source_format="NIfTI")


# --------------------------------------------------------------------------- the map on the scan's grid


@pytest.mark.parametrize("grid", [(7, 9, 4), (13, 5, 11)])  # enlarged on most axes, shrunk on one (5 -> 4, 4 -> 5)
def test_every_plane_equals_a_slice_of_torchs_trilinear_upsampling(grid) -> None:
    raw_map = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    full = _upsampled(raw_map, grid)
    worst = 0.0
    for axis in range(3):
        for index in range(grid[axis]):
            plane = map_slice(raw_map, grid, axis, index)
            worst = max(worst, float(np.abs(plane - np.take(full, index, axis=axis)).max()))
    assert worst < 1e-5
    assert map_slice(raw_map, grid, 0, 0).dtype == np.float32


def test_a_plane_resampled_to_a_screen_size_is_torchs_trilinear_on_that_grid() -> None:
    raw_map = np.random.default_rng(2).random((3, 4, 5)).astype(np.float32)
    coarse = _upsampled(raw_map, (7, 6, 17))  # 9 x 4 columns x rows shown as 6 x 17
    assert np.abs(map_slice(raw_map, (7, 9, 4), 0, 3, size=(6, 17)) - coarse[3]).max() < 1e-5


@pytest.mark.parametrize("grid", [(7, 9, 4), (40, 33, 29)])
def test_the_projection_is_the_maximum_of_torchs_upsampled_map(grid) -> None:
    raw_map = np.random.default_rng(3).random((3, 4, 5)).astype(np.float32)
    full = _upsampled(raw_map, grid)
    for axis in range(3):
        assert np.abs(map_projection(raw_map, grid, axis) - full.max(axis=axis)).max() < 1e-5


def test_the_whole_map_for_an_export_equals_torchs() -> None:
    raw_map = np.random.default_rng(4).random((2, 3, 4)).astype(np.float32)
    assert np.abs(map_volume(raw_map, (5, 7, 9)) - _upsampled(raw_map, (5, 7, 9))).max() < 1e-5


def test_a_map_without_heat_is_zero_and_a_bad_plane_is_one_sentence() -> None:
    assert not map_slice(np.zeros((2, 2, 2)), (4, 4, 4), 1, 2).any()
    with pytest.raises(RenderError, match=r"^Plane 4 is outside the scan's 4 planes along axis 1\.$"):
        map_slice(np.ones((2, 2, 2)), (4, 4, 4), 1, 4)


def test_the_peak_is_the_voxel_nearest_the_hottest_cells_centre() -> None:
    raw_map = np.zeros((4, 4, 4), np.float32)
    raw_map[2, 1, 2] = 1.0
    grid = (12, 20, 8)  # cell centres at voxel 3a + 1, 5a + 2 and 2a + 0.5 (a tie: the lower voxel)
    peak = map_peak(raw_map, grid)
    assert peak == (7, 7, 4)
    full = _upsampled(raw_map, grid)
    assert full[peak] == pytest.approx(0.75) and full.max() == pytest.approx(0.75)  # columns 4 and 5 share the cell
    assert np.unravel_index(full.argmax(), grid) == peak  # the first maximum, as argmax gives it
    assert map_peak(np.eye(2)[None], (4, 8, 8)) == (1, 1, 1)
    raw_map[2, 1, 2], raw_map[0, 0, 3] = 0.0, 1.0  # at the edges a band holds the cell: its voxel nearest the centre
    assert map_peak(raw_map, grid) == (1, 2, 7)
    assert _upsampled(raw_map, grid)[1, 2, 7] == pytest.approx(1.0)


def test_the_peak_holds_the_maximum_of_a_random_map() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        raw_map = rng.random((2, 3, 4)).astype(np.float32)
        full = _upsampled(raw_map, (6, 9, 12))  # three voxels per cell: every cell centre is a voxel centre
        assert full[map_peak(raw_map, (6, 9, 12))] == pytest.approx(full.max(), abs=1e-9)


# --------------------------------------------------------------------------- the scan


def test_scan_slices_cut_the_right_axis_and_apply_the_window() -> None:
    k, j, i = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), indexing="ij")
    volume = _volume((2, 3, 4), values=(100 * k + 10 * j + i).astype(np.float32))
    identity = Window(128, 256)  # (x - 127.5) * 255 / 255 + 127.5: every value in 0..255 shown as itself
    assert scan_slice(volume, 0, 1, identity).tolist() == [[100 + 10 * b + c for c in range(4)] for b in range(3)]
    assert scan_slice(volume, 1, 2, identity).tolist() == [[100 * a + 20 + c for c in range(4)] for a in range(2)]
    assert scan_slice(volume, 2, 3, identity).tolist() == [[100 * a + 10 * b + 3 for b in range(3)] for a in range(2)]
    ct = _volume((1, 1, 3), values=np.array([[[-1000.0, 40.0, 1000.0]]], np.float32))
    assert scan_slice(ct, 0, 0, Window(40, 400)).tolist() == [[0, 128, 255]]  # (40 - 39.5) * 255 / 399 + 127.5


# --------------------------------------------------------------------------- on screen


def test_planes_follow_the_radiological_convention() -> None:
    ras, lps = _volume((4, 5, 6), RAS), _volume((4, 5, 6), LPS)
    axial, coronal, sagittal = (plane_of(ras, axis) for axis in range(3))
    assert [p.title for p in (axial, coronal, sagittal)] == ["Axial", "Coronal", "Sagittal"]
    assert axial.edges == ("A", "P", "R", "L") and (axial.flip_rows, axial.flip_cols) == (True, True)
    assert coronal.edges == ("S", "I", "R", "L") and (coronal.rows_axis, coronal.cols_axis) == (0, 2)
    assert sagittal.edges == ("S", "I", "A", "P") and (sagittal.rows_axis, sagittal.cols_axis) == (0, 1)
    assert (plane_of(lps, 0).flip_rows, plane_of(lps, 0).flip_cols) == (False, False)  # DICOM: shown as stored
    # A RAS voxel at the patient's right front (i and j at their last index) is drawn top left on the axial plane.
    assert axial.orient(np.arange(30).reshape(5, 6))[0, 0] == 29
    # Sagittal: rows are slices (head up), columns the rows j (front on the left).
    assert sagittal.orient(np.arange(20).reshape(4, 5)).tolist()[0] == [19, 18, 17, 16, 15]


def test_a_thick_slice_scan_keeps_its_proportions() -> None:
    ct = _volume((30, 64, 64), np.diag([0.7, 0.7, 5.0, 1.0]))  # 0.7 x 0.7 mm pixels, 5 mm slices
    assert plane_of(ct, 0).size(384) == (384, 384)
    assert plane_of(ct, 1).size(384) == (384, 115)  # 150 mm high, 44.8 mm wide
    assert plane_of(ct, 2).size(384) == (384, 115)
    assert plane_of(ct, 1).spacing == pytest.approx((5.0, 0.7))


def test_the_overlay_puts_the_heat_and_the_crosshair_over_the_peak() -> None:
    volume = _volume((12, 20, 28))  # 3, 5 and 7 voxels per cell of a 4 x 4 x 4 map
    raw_map = np.zeros((4, 4, 4), np.float32)
    raw_map[1, 2, 0] = 1.0  # i = 0 is the patient's right: drawn on the right of the axial plane
    peak = map_peak(raw_map, volume.shape)
    assert peak == (4, 12, 3)  # cell centres 4 and 12; along i the edge band 0-3, its voxel nearest the centre
    picture = plane_picture(volume, raw_map, 0, peak, Window(100, 10), alpha=1.0, colormap="hot", crosshair=False)
    assert picture.shape == (384, 384, 3)
    plane = plane_of(volume, 0)
    top, left, height, width = plane.box(384)
    assert (height, width) == (251, 352)  # a 20 x 28 plane fitted in the 352 pixels within the margins
    brightness = picture.astype(int).sum(axis=2)  # "hot" grows brighter with the heat
    rows, cols = np.nonzero(brightness >= brightness.max() - 12)
    assert abs(np.median(rows) - (top + plane.screen(1, 12, height))) <= 3  # anterior is up: j = 12 of 20, flipped
    assert np.median(cols) > left + width - 30  # the patient's right edge, drawn on the right
    crossed = plane_picture(volume, raw_map, 0, peak, Window(100, 10), alpha=0.0)
    row = top + int(plane.screen(1, 12, height))
    assert crossed[row, 100:300].min() == round(255 * 0.55)  # the crosshair over a black scan
    assert crossed[row + 3, 100:300].max() == 0
    projection = projection_picture(volume, raw_map, 1, "hot")
    assert projection.astype(int).sum(axis=2).max() >= 3 * 250  # the projection holds the peak's full heat
