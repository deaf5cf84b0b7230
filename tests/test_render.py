"""Tests of gradcam_core.render: colour maps, overlays, PNG export."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from gradcam_core.render import (
    COLORMAPS,
    blend_colored,
    colorize,
    heatmap_to_uint8,
    overlay,
    to_png_bytes,
)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.fixture
def heatmap(rng):
    return rng.random((30, 40), dtype=np.float32)


# --------------------------------------------------------------------------- colour maps


def test_colormaps_are_real_opencv_constants():
    assert next(iter(COLORMAPS)) == "jet"
    assert {"jet", "viridis", "cividis", "inferno", "magma", "turbo", "hot"} <= set(COLORMAPS)
    assert "gray" not in COLORMAPS
    for name, value in COLORMAPS.items():
        assert value == getattr(cv2, f"COLORMAP_{name.upper()}")


def test_jet_endpoints_in_rgb_order():
    colored = colorize(np.array([[0.0, 1.0]], np.float32), "jet")
    low, high = colored[0, 0].tolist(), colored[0, 1].tolist()
    # 0.0 is (dark) blue, 1.0 is (dark) red -- in RGB order, not OpenCV's BGR.
    assert low[2] >= 120 and low[0] == 0 and low[1] == 0
    assert high[0] >= 120 and high[1] == 0 and high[2] == 0


def test_hot_top_is_white_and_bottom_black():
    colored = colorize(np.array([[0.0, 1.0]]), "hot")
    assert colored[0, 0].tolist() == [0, 0, 0]
    assert colored[0, 1].tolist() == [255, 255, 255]


def test_colorize_matches_opencv_with_channels_swapped(heatmap):
    for name, code in COLORMAPS.items():
        expected = cv2.cvtColor(
            cv2.applyColorMap(np.round(heatmap * 255).astype(np.uint8), code), cv2.COLOR_BGR2RGB
        )
        np.testing.assert_array_equal(colorize(heatmap, name), expected, err_msg=name)


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_every_colormap_works(name, heatmap):
    colored = colorize(heatmap, name)
    assert colored.shape == (30, 40, 3) and colored.dtype == np.uint8
    ramp = colorize(np.linspace(0, 1, 256)[None, :], name)
    assert len({tuple(px) for px in ramp[0]}) > 50  # a real colour ramp


def test_unknown_colormap_lists_valid_names(heatmap):
    with pytest.raises(ValueError, match="jet") as excinfo:
        colorize(heatmap, "rainbow-unicorn")
    for name in COLORMAPS:
        assert name in str(excinfo.value)
    with pytest.raises(ValueError):
        colorize(heatmap, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        overlay(np.zeros((30, 40, 3), np.uint8), heatmap, colormap="JETT")


def test_colorize_shape_dtype_and_input_untouched(heatmap):
    before = heatmap.copy()
    colored = colorize(heatmap)
    assert colored.shape == (30, 40, 3) and colored.dtype == np.uint8
    np.testing.assert_array_equal(heatmap, before)


def test_colorize_rejects_non_2d():
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        colorize(np.zeros(5))


# --------------------------------------------------------------------------- heatmap_to_uint8


def test_heatmap_to_uint8_values():
    h = np.array([[0.0, 0.5, 1.0, 0.25]], np.float64)
    assert heatmap_to_uint8(h).tolist() == [[0, 128, 255, 64]]
    assert heatmap_to_uint8(h).dtype == np.uint8


def test_heatmap_to_uint8_clips_and_zeroes_nan():
    h = np.array([[-0.5, 1.5, np.nan, np.inf, -np.inf, 0.5]], np.float32)
    before = h.copy()
    assert heatmap_to_uint8(h).tolist() == [[0, 255, 0, 255, 0, 128]]
    np.testing.assert_array_equal(h, before)  # input not modified (NaN-aware)


def test_nan_heatmap_colours_like_zero():
    nan = colorize(np.full((2, 2), np.nan))
    zero = colorize(np.zeros((2, 2)))
    np.testing.assert_array_equal(nan, zero)


def test_heatmap_to_uint8_other_dtypes():
    assert heatmap_to_uint8(np.array([[0, 1]], np.int64)).tolist() == [[0, 255]]
    assert heatmap_to_uint8(np.array([[False, True]])).tolist() == [[0, 255]]
    assert heatmap_to_uint8(np.array([[7, 200]], np.uint8)).tolist() == [[7, 200]]
    assert heatmap_to_uint8(np.zeros((3, 4, 1))).shape == (3, 4)
    assert heatmap_to_uint8(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError):
        heatmap_to_uint8(np.array([["a", "b"]]))


# --------------------------------------------------------------------------- overlay / blend


def test_overlay_shape_dtype(image, heatmap):
    out = overlay(image, heatmap)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8


def test_overlay_alpha_zero_is_the_image_exactly(image, heatmap):
    out = overlay(image, heatmap, alpha=0.0)
    np.testing.assert_array_equal(out, image)
    assert out is not image
    out[0, 0] = 0
    assert not np.shares_memory(out, image)


def test_overlay_alpha_one_is_the_coloured_heatmap(image, heatmap):
    for name in COLORMAPS:
        np.testing.assert_array_equal(overlay(image, heatmap, 1.0, name), colorize(heatmap, name))


def test_overlay_is_the_weighted_mean(image, heatmap):
    alpha = 0.3
    expected = (1 - alpha) * image.astype(np.float64) + alpha * colorize(heatmap).astype(np.float64)
    out = overlay(image, heatmap, alpha)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0


def test_overlay_does_not_modify_inputs(image, heatmap):
    img0, heat0 = image.copy(), heatmap.copy()
    overlay(image, heatmap, 0.5)
    np.testing.assert_array_equal(image, img0)
    np.testing.assert_array_equal(heatmap, heat0)


def test_overlay_accepts_pil_and_grey_and_rgba(image, heatmap):
    expected = overlay(image, heatmap, 0.4)
    np.testing.assert_array_equal(overlay(Image.fromarray(image), heatmap, 0.4), expected)
    rgba = np.dstack([image, np.full((30, 40), 7, np.uint8)])
    np.testing.assert_array_equal(overlay(rgba, heatmap, 0.4), expected)
    grey = image[:, :, 0]
    out = overlay(grey, heatmap, 0.4)
    np.testing.assert_array_equal(out, overlay(np.dstack([grey] * 3), heatmap, 0.4))
    np.testing.assert_array_equal(overlay(Image.fromarray(grey), heatmap, 0.4), out)


def test_overlay_float_image_taken_as_unit_range(image, heatmap):
    as_float = image.astype(np.float32) / 255.0
    np.testing.assert_array_equal(overlay(as_float, heatmap, 0.5), overlay(image, heatmap, 0.5))


def test_overlay_non_contiguous_inputs(image, heatmap):
    flipped = image[:, ::-1]
    out = overlay(flipped, heatmap[:, ::-1], 0.5)
    np.testing.assert_array_equal(out, overlay(np.ascontiguousarray(flipped), np.ascontiguousarray(heatmap[:, ::-1]), 0.5))


@pytest.mark.parametrize("shape", [(30, 41), (31, 40), (40, 30), (30, 40, 2), (30,)])
def test_overlay_wrong_heatmap_shape(image, shape):
    with pytest.raises(ValueError):
        overlay(image, np.zeros(shape, np.float32))


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), float("inf"), "0.5", None, True])
def test_overlay_bad_alpha(image, heatmap, alpha):
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heatmap, alpha)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        blend_colored(image, image, alpha)  # type: ignore[arg-type]


def test_overlay_integer_alpha_ok(image, heatmap):
    np.testing.assert_array_equal(overlay(image, heatmap, 0), image)
    np.testing.assert_array_equal(overlay(image, heatmap, 1), colorize(heatmap))
    overlay(image, heatmap, np.float32(0.25))


def test_overlay_bad_image(heatmap):
    with pytest.raises(ValueError):
        overlay(np.zeros((30, 40, 5), np.uint8), heatmap)
    with pytest.raises(ValueError):
        overlay(np.zeros((30, 40, 3), np.int64), heatmap)


def test_blend_colored(image, heatmap):
    colored = colorize(heatmap, "viridis")
    np.testing.assert_array_equal(blend_colored(image, colored, 0.0), image)
    assert blend_colored(image, colored, 0.0) is not image
    assert blend_colored(image, colored, 1.0) is not colored
    np.testing.assert_array_equal(blend_colored(image, colored, 1.0), colored)
    np.testing.assert_array_equal(blend_colored(image, colored, 0.6), overlay(image, heatmap, 0.6, "viridis"))
    with pytest.raises(ValueError):
        blend_colored(image, colored[:-1], 0.5)
    with pytest.raises(ValueError):
        blend_colored(image.astype(np.float32), colored, 0.5)
    with pytest.raises(ValueError):
        blend_colored(image[:, :, 0], colored[:, :, 0], 0.5)


def test_overlay_on_12_megapixels_matches_the_formula_on_a_sample():
    # Speed is measured in benchmarks/ (never a timed assertion); here: correct values at full size.
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    heat = rng.random((3000, 4000), dtype=np.float32)
    blended = overlay(big, heat, 0.25)
    assert blended.shape == big.shape and blended.dtype == np.uint8
    colored = colorize(heat)
    rows, cols = rng.integers(0, 3000, 50), rng.integers(0, 4000, 50)
    expected = 0.75 * big[rows, cols].astype(np.float64) + 0.25 * colored[rows, cols]
    assert np.abs(blended[rows, cols].astype(np.float64) - expected).max() <= 1.0


# --------------------------------------------------------------------------- PNG export


@pytest.mark.parametrize("shape", [(5, 6, 3), (5, 6), (5, 6, 4), (5, 6, 1)])
def test_to_png_bytes_round_trip(rng, shape):
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    data = to_png_bytes(arr)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        np.testing.assert_array_equal(np.asarray(img), arr.reshape(shape[:2]) if shape[-1:] == (1,) else arr)


def test_to_png_bytes_non_contiguous_and_fast_level(image):
    flipped = image[:, ::-1]
    with Image.open(io.BytesIO(to_png_bytes(flipped, compress_level=1))) as img:
        np.testing.assert_array_equal(np.asarray(img), flipped)


def test_to_png_bytes_rejects_bad_input():
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros(4, np.uint8))
