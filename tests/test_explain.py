"""Image-level explanations with the real offline model on real photos."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from gradcam_core import LayerError, TargetError, explain, heatmap_from_map

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


@pytest.fixture(scope="module")
def cat_result(lite0, assets):
    return explain(assets / "chelsea.png", model=lite0)


def test_cat_photo_is_a_cat_with_a_registered_heatmap(cat_result) -> None:
    assert cat_result.target.index in CATS and cat_result.predictions[0] == cat_result.target
    assert len(cat_result.predictions) == 5
    assert cat_result.heatmap.shape == (300, 451) == (cat_result.image.height, cat_result.image.width)
    assert cat_result.heatmap.dtype == np.float32
    assert cat_result.heatmap.min() >= 0.0 and 0.95 < cat_result.heatmap.max() <= 1.0  # bilinear between cells
    assert heatmap_from_map(cat_result.raw_map, cat_result.raw_map.shape).max() == 1.0
    assert cat_result.layer == "_bn1" and cat_result.method == "gradcam"
    assert cat_result.input_size == (224, 352)  # whole image, aspect kept: nothing cropped away
    assert cat_result.strength == pytest.approx(float(cat_result.raw_map.max()))


def test_result_is_frozen(cat_result) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cat_result.layer = "x"


def test_coffee_is_espresso(lite0, assets) -> None:
    result = explain((assets / "coffee.png").read_bytes(), model=lite0)
    assert result.target.index == ESPRESSO and result.target.label == "espresso"
    assert result.target.probability > 0.5


@pytest.mark.parametrize("target", ["tabby", "TABBY", " Tabby ", 281, "281"])
def test_target_by_name_or_index(lite0, assets, target) -> None:
    result = explain(assets / "chelsea.png", model=lite0, target=target)
    assert result.target.index == 281 and result.target.label == "tabby"


def test_unknown_class_name_suggests_close_ones(lite0, assets) -> None:
    with pytest.raises(TargetError, match=r"No class is named 'tabbby' \(did you mean 'tabby'"):
        explain(assets / "chelsea.png", model=lite0, target="tabbby")


def test_bad_layers(lite0, assets) -> None:
    with pytest.raises(LayerError, match="no layer named"):
        explain(assets / "chelsea.png", model=lite0, layer="_blocks.99")
    with pytest.raises(LayerError, match="4-D"):
        explain(assets / "chelsea.png", model=lite0, layer="_fc")


def test_model_by_name(assets) -> None:
    assert explain(assets / "coffee.png", model="efficientnet_lite0").target.index == ESPRESSO


def test_exif_rotated_photo_gets_an_upright_heatmap(lite0, assets) -> None:
    upright = Image.open(assets / "chelsea.png").convert("RGB")
    stored = upright.rotate(90, expand=True)  # stored sideways, EXIF says "rotate 270 CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    buffer = io.BytesIO()
    stored.transpose(Image.Transpose.ROTATE_180).save(buffer, "JPEG", exif=exif, quality=95)
    result = explain(buffer.getvalue(), model=lite0)
    assert result.heatmap.shape == (upright.height, upright.width)
    assert result.target.index in CATS


def _composite(left: Image.Image, right: Image.Image) -> Image.Image:
    height = 300
    left = left.resize((round(left.width * height / left.height), height))
    right = right.resize((round(right.width * height / right.height), height))
    canvas = Image.new("RGB", (left.width + right.width, height))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


@pytest.mark.parametrize("cat_first", [True, False])
def test_each_class_map_peaks_on_its_own_object(lite0, assets, cat_first: bool) -> None:
    cat = Image.open(assets / "chelsea.png").convert("RGB")
    cup = Image.open(assets / "coffee.png").convert("RGB")
    image = _composite(cat, cup) if cat_first else _composite(cup, cat)
    split = round(cat.width * 300 / cat.height) if cat_first else round(cup.width * 300 / cup.height)
    cat_class = explain(image, model=lite0, target="tabby")
    cup_class = explain(image, model=lite0, target="espresso")
    cat_peak_x = np.unravel_index(cat_class.heatmap.argmax(), cat_class.heatmap.shape)[1]
    cup_peak_x = np.unravel_index(cup_class.heatmap.argmax(), cup_class.heatmap.shape)[1]
    assert bool(cat_peak_x < split) is cat_first
    assert bool(cup_peak_x < split) is not cat_first


def test_heatmap_from_map_by_hand() -> None:
    raw = np.array([[0.0, 2.0], [4.0, 1.0]], dtype=np.float32)
    heat = heatmap_from_map(raw, (2, 2))
    np.testing.assert_allclose(heat, raw / 4.0)
    assert heatmap_from_map(np.zeros((2, 2), np.float32), (4, 6)).shape == (4, 6)
    assert not heatmap_from_map(np.zeros((2, 2), np.float32), (4, 6)).any()
    shared = heatmap_from_map(raw, (2, 2), scale=8.0)
    np.testing.assert_allclose(shared, raw / 8.0)
