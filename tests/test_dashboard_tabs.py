"""The Compare, Trust checks and Gallery tabs and the Guided Grad-CAM panels, against the engine's own numbers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

import streamlit as st
from streamlit.testing.v1 import AppTest

import gradcam_core
from gradcam_core import trust
from gradcam_core.render import gradient_to_rgb
from gradcam_core.tables import COLUMNS, csv_table
from tests.page_text import shown
from dashboard import cache, detail, downloads
from dashboard.settings import ImageInput, Settings

ROOT = Path(__file__).resolve().parents[1]

APP = str(ROOT / "dashboard" / "app.py")
CAT = ROOT / "assets" / "chelsea.png"


def _assert_healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _open(tab: str) -> AppTest:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.session_state["view"] = tab
    at.run()
    _assert_healthy(at)
    return at


def _heatmaps(at: AppTest) -> list[dict]:
    """The Plotly heatmap traces on the page."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return [trace for spec in specs for trace in spec["data"] if trace["type"] == "heatmap"]


@pytest.fixture(scope="module")
def model() -> gradcam_core.LoadedModel:
    return gradcam_core.load_model()


# ------------------------------------------------------------------------------------------------ compare


def test_compare_classes_on_a_common_raw_scale(model) -> None:
    at = _open("Compare")
    chosen = at.multiselect(key=next(m.key for m in at.multiselect if m.key.startswith("compare-classes"))).value
    found = [gradcam_core.explain(CAT, model, target=index) for index in chosen]
    assert len(chosen) == 3
    assert [p.index for p in found[0].predictions[:3]] == list(chosen)  # the top three by default
    strongest = max(f.strength for f in found)
    maps = _heatmaps(at)
    assert len(maps) == 3 and all(m["zmax"] == pytest.approx(strongest) for m in maps)
    captions = [shown(c.value) for c in at.caption if "peak" in c.value]
    for caption, explanation in zip(captions, found):
        assert f"peak **{explanation.strength:.3g}** · {explanation.strength / strongest:.0%} of the strongest" in caption

    at.toggle(key="compare-common-Classes").set_value(False).run()
    _assert_healthy(at)
    assert [m["zmax"] for m in _heatmaps(at)] == [1.0, 1.0, 1.0]


def test_compare_methods_and_layers(model) -> None:
    at = _open("Compare")
    at.segmented_control(key="compare-kind").set_value("Methods").run()
    _assert_healthy(at)
    assert [shown(m.value) for m in at.markdown if shown(m.value) in ("**Grad-CAM**", "**Grad-CAM++**", "**LayerCAM**")] == [
        "**Grad-CAM**", "**Grad-CAM++**", "**LayerCAM**"]
    assert not at.toggle(key="compare-common-Methods").value  # raw units differ between methods
    at.segmented_control(key="compare-kind").set_value("Layers").run()
    _assert_healthy(at)
    names = [info.name for info in model.layers]
    titles = [shown(m.value).strip("*") for m in at.markdown]
    assert [title for title in titles if title in names] == names[-3:]


# ------------------------------------------------------------------------------------------------ trust


def test_cancel_drops_the_compared_method_or_resets_the_sidebar(monkeypatch) -> None:
    """Cancel on a Compare panel whose slow method runs: the method leaves the comparison, or (when the panels
    compare classes or layers with the sidebar's method) the sidebar goes back to Grad-CAM."""
    from dashboard.tabs import compare

    state: dict[str, object] = {"method": "scorecam", compare.COMPARED_METHODS_KEY: ["gradcam", "scorecam", "layercam"]}
    monkeypatch.setattr(st, "session_state", state)
    panel = Settings(image=ImageInput.from_bytes("cat", b"x"), model="m", layer="l", target=None, method="scorecam",
                     alpha=0.5, colormap="jet")
    compare.cancel_action("Methods", panel)()
    assert state == {"method": "scorecam", compare.COMPARED_METHODS_KEY: ["gradcam", "layercam"]}
    compare.cancel_action("Classes", panel)()
    assert state["method"] == "gradcam"


def test_trust_checks_show_the_engines_numbers(model) -> None:
    at = _open("Trust checks")
    explanation = gradcam_core.explain(CAT, model)
    curves = trust.deletion_insertion(model, gradcam_core.load_image(CAT), explanation.raw_map, explanation.target.index)
    sanity = trust.sanity_check(model, gradcam_core.load_image(CAT))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Deletion AUC (lower is better)"] == f"{curves.deletion_auc:.3f}"
    assert metrics["Insertion AUC (higher is better)"] == f"{curves.insertion_auc:.3f}"
    assert metrics["Rank correlation ρ"] == f"{sanity.similarity:.2f}"
    failed = not curves.beats_random or sanity.suspicious
    assert (bool(at.warning), bool(at.success)) == (failed, not failed)  # one verdict, never green beside a failure
    assert any("Draw or upload a region" in i.value for i in at.info)


def _mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def test_region_check_with_an_uploaded_mask(model) -> None:
    at = _open("Trust checks")
    picture = gradcam_core.load_image(CAT)
    at.file_uploader(key="region-mask").upload("mask.png", _mask_png(picture.size, (0, 0, picture.width // 2, picture.height))).run()
    _assert_healthy(at)
    heatmap = gradcam_core.explain(CAT, model).heatmap
    left = np.zeros(heatmap.shape, bool)
    left[:, : picture.width // 2] = True
    expected = trust.region_check(heatmap, left)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Heat inside the region"] == f"{expected.heat_share:.0%}"
    assert metrics["Peak inside the region"] == ("yes" if expected.peak_inside else "no")
    region = json.loads(at.get("plotly_chart")[-1].proto.spec)
    outlines = [shape["path"] for shape in region["layout"].get("shapes", [])]
    assert len(outlines) == 2  # the region is drawn on the map (a dark and a white dashed line)
    xs = [float(point.split(",")[0]) for point in outlines[1].strip("MZ ").split(" L ")]
    assert min(xs) < 5 and abs(max(xs) - picture.width // 2) < picture.width / 40  # the left half


def test_region_mask_of_the_wrong_size_gives_one_sentence() -> None:
    at = _open("Trust checks")
    at.file_uploader(key="region-mask").upload("mask.png", _mask_png((50, 40), (0, 0, 25, 40))).run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "same size" in error and "\n" not in error


def test_drawn_box_and_lasso_become_a_mask_of_the_map() -> None:
    """Plotly reports shapes in pixels of the shown picture; the mask is on the map's own grid."""
    from types import SimpleNamespace

    from dashboard.tabs.trust import drawn_mask

    assert drawn_mask(SimpleNamespace(selection={"box": [], "lasso": []}), (200, 100), (10, 20)) is None
    box = SimpleNamespace(selection={"box": [{"x": [100, 0], "y": [0, 50]}]})
    mask = drawn_mask(box, (200, 100), (10, 20))  # the left half of the top half, as the user dragged it
    assert mask.shape == (10, 20) and mask[:5, :10].all() and mask.sum() == pytest.approx(66, abs=12)
    lasso = SimpleNamespace(selection={"lasso": [{"x": [190, 199, 199], "y": [90, 90, 99]}]})
    assert drawn_mask(lasso, (200, 100), (10, 20))[9, 19] and drawn_mask(lasso, (200, 100), (10, 20)).sum() <= 3


# ------------------------------------------------------------------------------------------------ gallery


def test_gallery_of_uploads_including_dicom(model) -> None:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    files = [
        ("cat.png", CAT.read_bytes(), "image/png"),
        ("=HYPERLINK(evil).png", (ROOT / "assets" / "coffee.png").read_bytes(), "image/png"),
        ("Doe^John.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes(), "application/dicom"),
    ]
    at.file_uploader(key="upload").set_value(files).run()
    at.session_state["view"] = "Gallery"
    at.run()
    _assert_healthy(at)
    assert len(at.get("image")) == 3
    captions = "\n".join(shown(c.value) for c in at.caption)
    assert "CT image, frame 1 of 1 · upload 3" in captions and "Doe" not in captions
    coffee = gradcam_core.explain(ROOT / "assets" / "coffee.png", model)
    assert f"{coffee.predictions[0].label} {coffee.predictions[0].probability:.1%}" in captions
    # DICOM uploads are named by their place, never by their file name (which often carries the patient's)
    assert at.selectbox(key="chosen-upload").options == ["cat.png", "=HYPERLINK(evil).png", "Upload 3 (DICOM)"]


def test_gallery_csv_is_safe_for_spreadsheets(model) -> None:
    image = ImageInput.from_bytes("=cmd|' /C calc'!A0", (ROOT / "assets" / "coffee.png").read_bytes())
    settings = Settings(image, model.name, model.default_layer, None, "gradcam", 0.5, "jet")
    result = cache.explain(settings, model)
    rows = list(csv.reader(io.StringIO(csv_table([(image.name, result)]))))
    assert rows[0] == list(COLUMNS)
    row = dict(zip(COLUMNS, rows[1]))
    assert row["image"] == "'=cmd|' /C calc'!A0"
    assert row["top_class"] == result.predictions[0].label == "espresso"
    assert float(row["peak_evidence"]) == pytest.approx(result.strength, rel=1e-5)
    assert (row["model"], row["layer"], row["method"]) == (model.name, model.default_layer, "gradcam")


# ------------------------------------------------------------------------------------------------ guided


def test_guided_gradcam_panels_match_the_engine(model) -> None:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.toggle(key="guided").set_value(True).run()
    _assert_healthy(at)
    titles = [m.value for m in at.markdown]
    assert "**Guided backpropagation**" in titles and "**Guided Grad-CAM**" in titles
    image_input = ImageInput.from_bytes("Cat", CAT.read_bytes())
    settings = Settings(image_input, model.name, model.default_layer, None, "gradcam", 0.5, "jet")
    result = cache.explain(settings, model)
    shown = cache.display_image(image_input.digest, image_input.data)
    backprop, guided = detail.guided_pictures(
        image_input.digest, model.name, result.layer, result.target.index, "gradcam", result, model, shown
    )
    engine = gradcam_core.guide(result.explanation(np.asarray(shown)), model)
    assert np.array_equal(backprop, gradient_to_rgb(engine.guided_backprop))
    assert np.array_equal(guided, gradient_to_rgb(engine.guided_gradcam))
    assert guided.shape == shown.shape and (guided != 128).any()
    # The download is the same picture at the image's full resolution.
    full = cache.decode_image(image_input.digest, image_input.data)
    png = downloads.guided_gradcam_png(full, result, model)()
    full_size = gradcam_core.explain_guided(CAT, model)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), gradient_to_rgb(full_size.guided_gradcam))
    assert "download-guided" in [button.key for button in at.get("download_button")]


def test_gallery_names_the_failing_upload_and_shows_a_repeat_once(model) -> None:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    cat = CAT.read_bytes()
    at.file_uploader(key="upload").set_value(
        [("cat.png", cat, "image/png"), ("copy.png", cat, "image/png"), ("empty.png", b"", "image/png")]
    ).run()
    at.session_state["view"] = "Gallery"
    at.run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == ["empty.png: The file is empty."]
    assert len(at.get("image")) == 1
    assert "1 repeated upload(s) of the same file shown once." in "\n".join(c.value for c in at.caption)


def test_dicom_window_and_frame_are_recorded(model) -> None:
    from dashboard.medical import as_picture

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    picture = as_picture(ImageInput.from_bytes("Upload 1 (DICOM)", data), 0, gradcam_core.Window(40, 400), "Soft tissue")
    settings = Settings(picture, model.name, model.default_layer, None, "gradcam", 0.5, "jet")
    facts = json.loads(downloads.report(settings, cache.explain(settings, model), (128, 128), model.title))["image"]["facts"]
    assert facts["Window"] == "Soft tissue: level 40, width 400" and facts["Frame"] == "1 of 1"


def test_a_cancelled_faithfulness_check_waits_to_be_run_again(model) -> None:
    from dashboard.tabs import trust as trust_view

    st.cache_data.clear()
    cache.shared_results().clear()
    trust_view.shared_curves().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    found = gradcam_core.explain(CAT, model)
    digest = ImageInput.from_bytes("Cat", CAT.read_bytes()).digest
    key = (digest, model.name, found.layer, cache.target_key(None), "gradcam")  # the sidebar's top class: no target
    at.session_state[trust_view.CANCELLED_KEY] = key  # what the Cancel button stores
    at.session_state["view"] = "Trust checks"
    at.run()
    assert not at.exception
    assert any("was cancelled" in i.value for i in at.info)
    assert not any(m.label.startswith("Deletion AUC") for m in at.metric)
    at.button(key="trust-run").click().run()
    assert not at.exception
    assert any(m.label.startswith("Deletion AUC") for m in at.metric)
