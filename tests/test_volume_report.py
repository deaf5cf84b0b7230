"""The HTML report of a 3-D explanation: one self-contained page with the viewer's planes through the peak, the
projections, the hottest slices (checked against an independent ranking), escaped names and no patient data.

A seeded random 3-D network (``tests.test_cam3d.small_net``) explains a small scan with a bright block, and a
DICOM series whose tags hold a patient's name, birth date and institution (``tests.test_volumes.ct_series``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import re
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from safetensors.torch import save
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dashboard.tabs import scan as scan_tab
from gradcam_core.errors import RenderError
from gradcam_core.report import DISCLAIMER, library_versions
from gradcam_core.volume_cam import explain_volume
from gradcam_core.volume_models import LoadedVolumeModel, VolumePreprocessing
from gradcam_core.volume_report import HotSlice, build_volume_report, hottest_slices
from gradcam_core.volume_view import (
    map_peak,
    map_slice,
    map_volume,
    plane_of,
    plane_picture,
    projection_picture,
    scan_window,
    with_crosshair,
)
from gradcam_core.volumes import Volume, read_volume
from tests.test_cam3d import small_net
from tests.test_report import decode_png, fields, parse
from tests.test_volumes import SECRETS, ct_series

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
EVIL = '<script>alert("x")</script>'
TITLE = '<b onmouseover="x">Tiny 3-D</b>'
PLANES = ("Axial", "Coronal", "Sagittal")
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def tiny_model() -> LoadedVolumeModel:
    """A seeded random Conv3d network (map at half the 8 x 16 x 16 input), classes named with markup."""
    network = small_net(seed=4)
    return LoadedVolumeModel(
        name="tiny3d",
        title=TITLE,
        model=network,
        categories=("normal", EVIL, "nodule"),
        preprocessing=VolumePreprocessing((8, 16, 16)),
        default_layer="3",
        layers=("1", "3"),
        weights_sha256=hashlib.sha256(save(network.state_dict())).hexdigest(),
    )


def block_scan() -> Volume:
    """A 12 x 20 x 16 scan (0.8 x 0.9 mm pixels, 2.5 mm slices): noise and a bright block off-centre."""
    voxels = np.random.default_rng(0).normal(0.0, 20.0, (12, 20, 16)).astype(np.float32)
    voxels[7:11, 3:9, 9:14] += 500.0
    return Volume(voxels, np.diag([0.8, 0.9, 2.5, 1.0]), "NumPy")


@pytest.fixture(scope="module")
def model() -> LoadedVolumeModel:
    return tiny_model()


@pytest.fixture(scope="module")
def scan() -> Volume:
    return block_scan()


@pytest.fixture(scope="module")
def result(scan, model):
    explanation = explain_volume(scan, model, target=1)
    assert explanation.target.label == EVIL and explanation.raw_map.shape == (4, 8, 8)
    assert explanation.strength > 0
    return explanation


@pytest.fixture(scope="module")
def document(scan, result, model) -> str:
    return build_volume_report(scan, result, model, alpha=0.4, colormap="viridis", now=NOW)


def _hot_rows(document: str) -> list[list[str]]:
    return [row for row in parse(document).rows if len(row) == 5 and row[0] in PLANES]


def test_the_report_is_one_page_that_loads_nothing(document: str) -> None:
    parsed = parse(document)  # well nested, every tag closed
    assert document.startswith("<!DOCTYPE html>") and parsed.title == "Grad-CAM report — 3-D scan"
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', document)
    assert policy and policy.group(1) == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert [image["id"] for image in parsed.images] == [
        "plane-axial", "plane-coronal", "plane-sagittal", "projection-axial", "projection-coronal",
        "projection-sagittal"]
    assert all(image["src"].startswith("data:image/png;base64,") for image in parsed.images)
    text = DATA_URI.sub("", document)  # the markup without the pictures' bytes
    assert text.count("src=") == text.count('src=""') == 6  # every src held a picture's data URI, nothing else
    for outside in ("http:", "https:", "//", "href", "<link", "<script", "url(", "@import", "<iframe", "<object"):
        assert outside not in text.lower(), outside
    assert set(parsed.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "strong", "div",
                                "figure", "img", "figcaption", "table", "thead", "tbody", "tr", "th", "td"}


def test_the_pictures_are_the_viewers_planes_and_projections_through_the_peak(document, scan, result) -> None:
    peak = map_peak(result.raw_map, scan.shape)
    pictures = {image["id"]: np.asarray(decode_png(image["src"]).convert("RGB")) for image in parse(document).images}
    for axis, title in enumerate(("axial", "coronal", "sagittal")):  # a RAS scan: slices axial, rows coronal...
        plane = plane_of(scan, axis)
        assert plane.title.lower() == title
        expected = plane_picture(scan, result.raw_map, axis, peak, scan_window(scan), 0.4, "viridis")
        assert pictures[f"plane-{title}"].shape == (384, 384, 3)
        np.testing.assert_array_equal(pictures[f"plane-{title}"], expected)  # PNG is lossless: the very pixels
        projection = with_crosshair(projection_picture(scan, result.raw_map, axis, "viridis"), plane, peak)
        np.testing.assert_array_equal(pictures[f"projection-{title}"], projection)
        assert pictures[f"plane-{title}"].std() > 10  # a scan under a heatmap, not a blank square
    table = fields(parse(document))
    assert table["Map peak"] == f"axial {peak[0] + 1}, coronal {peak[1] + 1}, sagittal {peak[2] + 1}"


def test_the_hottest_slices_equal_an_independent_ranking(document, scan, result) -> None:
    whole = map_volume(result.raw_map, scan.shape)  # the full-size map, only a test can afford it
    rows = _hot_rows(document)
    assert [row[0] for row in rows] == [title for title in PLANES for _ in range(5)]
    peak = map_peak(result.raw_map, scan.shape)
    marked = 0
    for axis, title in enumerate(PLANES):
        others = tuple(a for a in range(3) if a != axis)
        planes = [map_slice(result.raw_map, scan.shape, axis, index) for index in range(scan.shape[axis])]
        maxima = np.array([plane.max() for plane in planes], dtype=np.float64)
        means = np.array([plane.mean(dtype=np.float64) for plane in planes])
        np.testing.assert_allclose(maxima, whole.max(axis=others), atol=1e-6)  # the planes are the full map's
        np.testing.assert_allclose(means, whole.mean(axis=others, dtype=np.float64), atol=1e-6)
        order = np.lexsort((np.arange(len(planes)), -means, -maxima))[:5]  # maximum, then mean, then index
        listed = [row for row in rows if row[0] == title]
        assert [int(row[2]) - 1 for row in listed] == order.tolist()
        assert [row[1] for row in listed] == ["1", "2", "3", "4", "5"]
        assert [row[3] for row in listed] == [f"{maxima[i]:.3f}" for i in order]
        assert [row[4] for row in listed] == [f"{means[i]:.3f}" for i in order]
        ranked = hottest_slices(result.raw_map, scan.shape, axis)
        assert ranked == tuple(HotSlice(int(i), float(maxima[i]), float(means[i])) for i in order)
        assert ranked[0].maximum == pytest.approx(float(whole.max()), abs=1e-6)  # the hottest voxel's slice first
        assert np.sort(whole.max(axis=others))[::-1][:5] == pytest.approx([hot.maximum for hot in ranked], abs=1e-6)
        marked += peak[axis] in order
    assert document.count('<tr class="target">') == 1 + marked  # the explained class and the peak's slices
    assert "ties go to the slice with the larger mean, then to the lower slice number" in document


def test_equal_maxima_are_ranked_by_their_mean_by_hand() -> None:
    # Two slices of a 2 x 1 x 2 map on a 2 x 1 x 4 grid: [1, 0] enlarged is [1, .75, .25, 0] (mean .5), [1, 1] stays
    # [1, 1, 1, 1] (mean 1); both reach 1, so the larger mean, slice 1, comes first, although its index is higher.
    raw_map = np.array([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert hottest_slices(raw_map, (2, 1, 4), 0) == (HotSlice(1, 1.0, 1.0), HotSlice(0, 1.0, 0.5))
    # Across the columns every plane reaches 1 (slice 1 is all ones): the mean alone ranks them, 1 then .875.
    assert hottest_slices(raw_map, (2, 1, 4), 2, count=2) == (HotSlice(0, 1.0, 1.0), HotSlice(1, 1.0, 0.875))


def test_the_fields_record_the_explanation(document, scan, result, model) -> None:
    parsed = parse(document)
    table = fields(parsed)
    target = result.target
    assert table["Model"] == f"{TITLE} (tiny3d)"
    assert table["Weights SHA-256"] == model.weights_sha256 and len(model.weights_sha256) == 64
    assert table["Target class"] == f"{EVIL} (index 1)"
    assert float(table["Target probability"]) == pytest.approx(target.probability, abs=1e-4)
    assert float(table["Target score (logit)"]) == pytest.approx(result.score, abs=1e-4)
    assert (table["Method"], table["Layer"]) == ("gradcam", "3")
    assert float(table["Evidence strength (map maximum)"]) == pytest.approx(result.strength, rel=1e-3)
    assert table["Map grid"] == "4 × 8 × 8 cells, covering the whole scan"
    assert table["Model input size"] == "8 × 16 × 16 voxels (the whole scan resized, not cropped)"
    assert table["Intensity scaling"] == "z-score over the scan (mean 0, standard deviation 1)"
    assert table["Model input channels"] == "1"
    window = scan_window(scan)
    assert table["Window shown"] == f"level {window.center:.6g}, width {window.width:.6g}"
    assert (table["Alpha"], table["Colormap"]) == ("0.40", "viridis")
    assert table["Timestamp (UTC)"] == "2024-05-06T07:08:09+00:00"
    for key, value in {**scan.summary(), **library_versions()}.items():
        assert table[key] == value
    assert table["Voxels"] == "16 x 20 x 12 slices"
    predictions = [row for row in parsed.rows if len(row) == 4 and row[0].isdigit()]
    assert predictions == [[str(rank), p.label, str(p.index), f"{p.probability * 100:.2f}%"]
                           for rank, p in enumerate(result.predictions, start=1)]
    assert len(predictions) == 3 and sum(float(row[3][:-1]) for row in predictions) == pytest.approx(100, abs=0.02)
    assert "".join(parsed.text).count(DISCLAIMER) == 2


def test_names_from_the_model_are_text_not_markup(document) -> None:
    assert "<script" not in document.lower() and "<b " not in document
    parsed = parse(document)
    assert not {"script", "b"} & set(parsed.tags)
    assert html.escape(EVIL) in document and html.escape(TITLE) in document
    assert EVIL in [row[1] for row in parsed.rows if len(row) == 4]  # shown intact, as text


def test_a_dicom_series_leaves_no_patient_data_in_the_report(model) -> None:
    files, _, uids = ct_series()
    volume = read_volume(files)
    assert volume.dicom is not None and volume.modality == "CT"
    windowed = dataclasses.replace(model, preprocessing=VolumePreprocessing((8, 16, 16), "window", (-700, 800)))
    result = explain_volume(volume, windowed)
    document = build_volume_report(volume, result, windowed, now=NOW)
    table = fields(parse(document))
    assert table["Format"] == "DICOM series" and table["Modality"] == "CT"
    assert table["Intensity scaling"] == "window level -700, width 800, clipped and scaled to 0–1"
    assert len(_hot_rows(document)) == 15
    text = DATA_URI.sub("", document).lower()  # base64 may spell anything by chance
    instances = [str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for data in files]
    identifiers = [*SECRETS.values(), *uids.values(), "ACC-99", *instances]
    for value in identifiers:
        assert value.lower() not in text, value
    for word in ("doe", "jane", "4711", "nowhere", "gregory", "erator", "secret", "saint"):
        assert not re.search(rf"\b{word}\b", text), word


def test_a_map_without_heat_and_bad_arguments(scan, result, model) -> None:
    cold = dataclasses.replace(result, raw_map=np.zeros_like(result.raw_map))
    document = build_volume_report(scan, cold, model, now=NOW)
    assert "The map is zero everywhere" in document and not _hot_rows(document)
    other = Volume(np.zeros((6, 20, 16), np.float32), np.eye(4), "NumPy")
    with pytest.raises(RenderError) as error:
        build_volume_report(other, result, model)
    assert str(error.value) == "The explanation is of a scan of 12 × 20 × 16 voxels, not of this one's 6 × 20 × 16."
    with pytest.raises(RenderError, match="positive whole number"):
        hottest_slices(result.raw_map, scan.shape, 0, count=0)
    with pytest.raises(RenderError, match="axis"):
        hottest_slices(result.raw_map, scan.shape, 3)
    with pytest.raises(RenderError, match="alpha"):
        build_volume_report(scan, result, model, alpha=1.5)


def _scan_downloads() -> None:
    """The scan tab's downloads for a tiny model and scan, the display settings as the page's widgets left them."""
    import streamlit as st

    from dashboard.tabs.scan import download_buttons
    from gradcam_core.volume_cam import explain_volume
    from tests.test_volume_report import block_scan, tiny_model

    model, volume = tiny_model(), block_scan()
    st.session_state["scan-alpha"], st.session_state["scan-colormap"] = 0.3, "cividis"
    download_buttons(volume, explain_volume(volume, model, target=1), model)


def test_the_scan_tab_builds_the_report_only_when_it_is_downloaded(monkeypatch) -> None:
    built, deferred = [], {}
    real_build, real_add = scan_tab.build_volume_report, MediaFileManager.add_deferred

    def counted(*args, **kwargs):
        built.append(kwargs)
        return real_build(*args, **kwargs)

    def kept(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        deferred[file_name] = data_callable
        return real_add(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(scan_tab, "build_volume_report", counted)
    monkeypatch.setattr(MediaFileManager, "add_deferred", kept)
    at = AppTest.from_function(_scan_downloads, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = [button.proto for button in at.get("download_button")]
    assert [button.label for button in buttons] == ["Report (HTML)", "Heatmap (NIfTI)"]  # not DICOM: no series
    assert buttons[0].deferred_file_id and not buttons[0].url
    assert built == []  # drawing the page never builds the report
    document = deferred["scan-report.html"]()  # what a click runs
    assert built == [{"alpha": 0.3, "colormap": "cividis"}]
    table = fields(parse(document))
    assert (table["Alpha"], table["Colormap"], table["Target class"]) == ("0.30", "cividis", f"{EVIL} (index 1)")
