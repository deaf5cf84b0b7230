"""The Streamlit dashboard driven headlessly with AppTest (same process: the engine can be spied on)."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import streamlit as st
from streamlit.testing.v1 import AppTest

import gradcam_core
from tests.page_text import shown
from dashboard import cache, downloads, figures
from dashboard.tabs import teaching
from dashboard.cache import Result
from dashboard.controls import ANOTHER_CLASS
from dashboard.settings import ImageInput, Settings

ROOT = Path(__file__).resolve().parents[1]

APP = str(ROOT / "dashboard" / "app.py")
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


@pytest.fixture
def model_calls(monkeypatch) -> list[tuple]:
    """Every call the dashboard makes to ``gradcam_core.explain`` (the only way it runs the model)."""
    calls: list[tuple] = []
    real = gradcam_core.explain

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(gradcam_core, "explain", spy)
    st.cache_data.clear()
    cache.shared_results().clear()
    return calls


@pytest.fixture
def app(model_calls) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    _assert_healthy(at)
    return at


def _assert_healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _select(at: AppTest, label: str):
    return next(box for box in at.selectbox if box.label == label)


def _summary(at: AppTest) -> str:
    return next(shown(m.value) for m in at.markdown if " sees " in m.value)


def _captions(at: AppTest) -> str:
    return "\n".join(shown(c.value) for c in at.caption)


def _png(draw_size: tuple[int, int] = (320, 240)) -> bytes:
    picture = Image.new("RGB", draw_size, (200, 220, 255))
    pen = ImageDraw.Draw(picture)
    pen.ellipse((60, 40, 200, 180), fill=(220, 120, 30))
    pen.rectangle((210, 120, 300, 220), fill=(40, 90, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_first_run_explains_the_cat_with_one_model_call(app: AppTest, model_calls) -> None:
    titles = {m.value for m in app.markdown}
    assert {"**Original**", "**Grad-CAM heatmap**", "**Overlay**"} <= titles
    assert len(app.get("plotly_chart")) == 2  # the linked panels and the predictions chart
    classes = _select(app, "Class")
    top_labels = [label.split(" — ")[0] for label in classes.options[:5]]
    assert CAT_CLASSES & set(top_labels)
    assert top_labels[0] in _summary(app)
    assert len(model_calls) == 1  # predictions and the default map share one cached call
    assert len(app.get("download_button")) == 5


def test_sample_coffee_is_espresso(app: AppTest) -> None:
    app.selectbox(key="sample").set_value("coffee.png").run()
    _assert_healthy(app)
    assert _select(app, "Class").value == gradcam_core.load_model().categories.index("espresso")
    assert "**espresso**" in _summary(app)
    assert "Coffee cup" in _captions(app)


def test_model_menu_lists_every_registered_model(app: AppTest) -> None:
    menu = app.selectbox(key="model")
    assert menu.options == [
        status.title if status.available else f"{status.title} — weights not on this machine"
        for status in gradcam_core.available_models()
    ] + ["Your own model…"]
    assert len(menu.options) == len(gradcam_core.MODELS) + 1


def test_unavailable_model_says_so_without_the_server_path(monkeypatch, model_calls, caplog) -> None:
    real = gradcam_core.available_models
    reason = "ResNet-50 needs its weights file resnet50.pth in /srv/hub/checkpoints."

    def statuses():
        return [
            replace(s, available=False, reason=reason) if s.name == "resnet50" else s for s in real()
        ]

    monkeypatch.setattr(gradcam_core, "available_models", statuses)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("resnet50").run()
    _assert_healthy(at)
    assert [i.value for i in at.info] == ["ResNet-50 is not installed on this server; pick another model."]
    assert reason in caplog.text  # the operator finds the path in the server log
    assert not at.get("plotly_chart")
    assert at.slider(key="alpha")  # the rest of the sidebar still works
    at.selectbox(key="model").set_value(gradcam_core.DEFAULT_MODEL).run()
    _assert_healthy(at)
    assert len(at.get("plotly_chart")) == 2


def test_model_that_fails_to_load_shows_one_sentence_without_the_path(monkeypatch, model_calls, caplog) -> None:
    real = gradcam_core.available_models
    monkeypatch.setattr(
        gradcam_core, "available_models", lambda: [replace(s, available=True, reason=None) for s in real()]
    )

    def broken(name=None):
        raise gradcam_core.ModelUnavailableError("The weights file for VGG-16 in /srv/hub could not be loaded.")

    monkeypatch.setattr(gradcam_core, "load_model", broken)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("vgg16").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["This model could not be loaded on this server; pick another model."]
    assert "/srv/hub" in caplog.text  # the path goes to the server log only


def test_layer_change_explains_that_layer(app: AppTest, model_calls) -> None:
    layers = app.selectbox(key=f"layer-{gradcam_core.DEFAULT_MODEL}")
    assert layers.value == gradcam_core.load_model().default_layer
    assert [label for label in layers.options if label.endswith(" · recommended")] == ["7×7 · _bn1 · 1280 maps · recommended"]
    earlier = next(o for o in gradcam_core.load_model().layers if o.name.startswith("_blocks.1"))
    layers.set_value(earlier.name).run()
    _assert_healthy(app)
    assert f"layer {earlier.name}." in _summary(app)
    assert model_calls[-1][1]["layer"] == earlier.name


def test_class_change_changes_the_target(app: AppTest) -> None:
    classes = _select(app, "Class")
    second = classes.options[1].split(" — ")[0]
    tabby = gradcam_core.load_model().categories.index("tabby")
    classes.set_value(tabby).run()
    _assert_healthy(app)
    assert "evidence for **tabby**" in _summary(app)
    assert "score for **tabby**" in _captions(app)
    _select(app, "Class").select_index(1).run()
    assert f"evidence for **{second}**" in _summary(app)


def test_any_class_can_be_searched_by_name(app: AppTest) -> None:
    _select(app, "Class").set_value(ANOTHER_CLASS).run()
    _assert_healthy(app)
    espresso = gradcam_core.load_model().categories.index("espresso")
    _select(app, "Search every class").set_value(espresso).run()
    _assert_healthy(app)
    assert "evidence for **espresso**" in _summary(app)


def test_method_change_to_counterfactual(app: AppTest) -> None:
    assert app.selectbox(key="method").options == [
        f"{m.title} (slow)" if m.forward_passes else m.title for m in gradcam_core.METHODS.values()
    ]
    app.selectbox(key="method").set_value("counterfactual").run()
    _assert_healthy(app)
    assert "evidence against" in _summary(app)
    assert "most lowered the score" in _captions(app)


def test_alpha_and_colormap_only_reblend(app: AppTest, model_calls) -> None:
    before = len(model_calls)
    app.slider(key="alpha").set_value(0.8).run()
    _assert_healthy(app)
    assert "80% opacity" in _captions(app)
    app.selectbox(key="colormap").set_value("viridis").run()
    _assert_healthy(app)
    assert "Yellow = regions" in _captions(app)
    assert len(model_calls) == before


def test_upload_is_explained(app: AppTest) -> None:
    app.file_uploader(key="upload").upload("drawing.png", _png(), "image/png").run()
    _assert_healthy(app)
    assert "drawing.png · 320 × 240 px" in _captions(app)
    assert "not medical images" not in _captions(app)  # that hint is for DICOM files only
    assert len(app.get("plotly_chart")) == 2
    assert app.selectbox(key="sample").disabled


def test_corrupt_upload_shows_one_sentence(app: AppTest) -> None:
    app.file_uploader(key="upload").upload("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "image/png").run()
    assert not app.exception
    assert len(app.error) == 1
    message = app.error[0].value
    assert message.endswith(".") and message.count(". ") == 0 and "Traceback" not in message
    assert app.slider(key="alpha") and app.selectbox(key="method")  # the rest keeps working
    assert not app.get("plotly_chart")


def test_unexpected_failure_is_generic(app: AppTest, monkeypatch, caplog) -> None:
    def crash(*args, **kwargs):
        raise RuntimeError("internal detail that must stay on the server")

    monkeypatch.setattr(gradcam_core, "explain", crash)
    app.selectbox(key="method").set_value("counterfactual").run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Something went wrong while explaining the image; try another image or setting."]
    assert "internal detail" in caplog.text


def test_heatmap_hover_grid_is_downsampled() -> None:
    raw_map = np.random.rand(7, 11).astype(np.float32)
    figure = figures.heatmap_figure(raw_map, (2000, 1200), "jet", 300, "evidence")
    z = np.asarray(figure.data[0].z)
    assert max(z.shape) == figures.HOVER_SIDE and z.min() >= 0 and z.max() <= 1
    assert figure.data[0].x[-1] < 2000 and figure.data[0].y[-1] < 1200


def test_downloads() -> None:
    raw_map = np.linspace(0, 2, 6, dtype=np.float32).reshape(2, 3)
    image = np.zeros((30, 40, 3), np.uint8)
    top = gradcam_core.Prediction(281, "tabby", 0.5)
    result = Result(raw_map, 2.0, (top,), top, 3.0, "m", "layer4", "gradcam", (224, 224))
    values = np.load(io.BytesIO(downloads.heatmap_npy(result, image.shape)()))
    assert np.array_equal(values, gradcam_core.heatmap_from_map(raw_map, (30, 40)))
    assert downloads.overlay_png(image, result, 0.5, "jet")().startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(downloads.heatmap_png(result, image.shape, "jet")())).size == (40, 30)
    settings = Settings(ImageInput.from_bytes("My scan.png", b"x"), "m", "layer4", None, "gradcam", 0.5, "jet")
    report = json.loads(downloads.report(settings, result, (4, 3), "Model"))
    assert report["explanation"]["target"]["label"] == "tabby"
    assert report["settings"]["alpha"] == 0.5 and report["image"]["width"] == 4
    assert downloads.file_stem("Retina (fundus)") == "retina-fundus"


def _open_teaching(at: AppTest) -> AppTest:
    at.session_state["view"] = "How it works"
    at.run()
    _assert_healthy(at)
    return at


def test_teaching_tab_shows_the_five_steps_from_the_same_computation(app: AppTest, model_calls) -> None:
    details = next(m.value for m in app.markdown if "Class score (before softmax)" in m.value)
    main_score = re.search(r"Class score \(before softmax\) \| ([-\d.]+) \|", details).group(1)
    _open_teaching(app)
    titles = [s.value for s in app.subheader if " · " in s.value]
    assert [t.split(" · ")[0] for t in titles] == ["1", "2", "3", "4", "5"]
    assert "the 8 channels with the largest weights out of 1280" in _captions(app).lower()
    assert [m.value for m in app.metric if m.label == teaching.SCORE_LABEL] == [main_score]
    assert len(app.get("latex")) == 1
    # One computation for the explained class (shared with the main view), one for the compared class.
    assert len(model_calls) == 2
    assert all(kwargs["keep_trace"] for _, kwargs in model_calls)
    compared = _select(app, "Compare with class")
    assert compared.value == gradcam_core.load_model().categories.index(compared.options[0].split(" — ")[0])
    assert model_calls[1][1]["target"] == compared.value


def test_teaching_tab_reads_the_cached_result_of_the_main_view(app: AppTest) -> None:
    settings = Settings(
        ImageInput.from_bytes("Cat", (ROOT / "assets" / "chelsea.png").read_bytes()),
        gradcam_core.DEFAULT_MODEL, gradcam_core.load_model().default_layer, None, "gradcam", 0.5, "jet",
    )
    result = cache.explain(settings, gradcam_core.load_model())
    steps = result.steps
    assert np.array_equal(np.maximum(steps.weighted_sum, 0), result.raw_map)
    shape = (300, 451)
    assert np.array_equal(gradcam_core.heatmap_from_map(steps.cam, shape), result.heatmap_at(shape))
    full = gradcam_core.explain(ROOT / "assets" / "chelsea.png", gradcam_core.load_model())
    assert np.array_equal(result.heatmap_at(shape), full.heatmap)  # the downloads equal the engine's heatmap
    assert steps.score == result.score and steps.activations.dtype == np.float32
    assert steps.activations.nbytes + steps.weights.nbytes <= 2 * 2**20


def test_teaching_compare_class_and_tiles(app: AppTest, model_calls) -> None:
    _open_teaching(app)
    compared = _select(app, "Compare with class")
    compared.select_index(2).run()
    _assert_healthy(app)
    assert model_calls[-1][1]["target"] == _select(app, "Compare with class").value
    app.segmented_control(key="tiles-ranking").set_value("largest contributions").run()
    _assert_healthy(app)
    assert "the 8 channels with the largest contributions out of 1280" in _captions(app).lower()
    before = len(model_calls)
    app.slider(key="alpha").set_value(0.7).run()
    _assert_healthy(app)
    assert "at 70% opacity" in "\n".join(m.value for m in app.markdown)
    assert len(model_calls) == before


@pytest.mark.parametrize("method", [n for n, m in gradcam_core.METHODS.items() if not m.forward_passes])
def test_teaching_tab_for_every_method(app: AppTest, method: str) -> None:
    app.selectbox(key="method").set_value(method).run()
    _open_teaching(app)
    assert len([s for s in app.subheader if " · " in s.value]) == 5
    assert (method in teaching.FORMULAS) == (len(app.get("latex")) == 1)
    if method in {"hirescam", "layercam"}:
        assert "average" in "\n".join(m.value for m in app.markdown)


def test_teaching_tab_for_an_early_layer(app: AppTest) -> None:
    _open_teaching(app)
    app.selectbox(key=f"layer-{gradcam_core.DEFAULT_MODEL}").set_value("_conv_stem").run()
    _assert_healthy(app)
    assert "the 8 channels with the largest weights out of 32" in _captions(app).lower()
    app.session_state["view"] = "Explanation"
    app.run()
    _assert_healthy(app)
    assert len(app.get("plotly_chart")) == 2


def test_slow_method_shows_progress_and_then_its_map(app: AppTest, model_calls) -> None:
    app.selectbox(key=f"layer-{gradcam_core.DEFAULT_MODEL}").set_value("_blocks.0").run()
    app.selectbox(key="method").set_value("scorecam").run()
    _assert_healthy(app)
    assert "Score-CAM heatmap" in {m.value.strip("*") for m in app.markdown}
    assert model_calls[-1][1]["method"] == "scorecam" and callable(model_calls[-1][1]["progress"])


def test_finished_slow_method_survives_later_reruns(app: AppTest, model_calls) -> None:
    """A finished Score-CAM is read back on every later rerun (opacity, the same method again, another tab)."""
    app.selectbox(key=f"layer-{gradcam_core.DEFAULT_MODEL}").set_value("_blocks.0").run()
    app.selectbox(key="method").set_value("scorecam").run()
    _assert_healthy(app)
    calls = len(model_calls)
    app.slider(key="alpha").set_value(0.7).run()
    _assert_healthy(app)
    app.selectbox(key="method").set_value("gradcam").run()
    app.selectbox(key="method").set_value("scorecam").run()
    _assert_healthy(app)
    app.session_state["view"] = "How it works"
    app.run()
    _assert_healthy(app)
    app.session_state["view"] = "Explanation"
    app.run()
    _assert_healthy(app)
    assert "Score-CAM heatmap" in {m.value.strip("*") for m in app.markdown}
    asked = [(call[1]["method"], call[1]["layer"], call[1]["target"]) for call in model_calls]
    assert len(asked) == len(set(asked)), asked  # nothing computed twice
    assert model_calls[calls - 1][1]["method"] == "scorecam" and callable(model_calls[calls - 1][1]["progress"])


def test_layer_follows_the_method_until_the_user_picks_one(app: AppTest) -> None:
    model = gradcam_core.load_model()
    key = f"layer-{gradcam_core.DEFAULT_MODEL}"
    assert app.selectbox(key=key).value == model.default_layer == "_bn1"
    app.selectbox(key="method").set_value("layercam").run()
    _assert_healthy(app)
    assert app.selectbox(key=key).value == model.default_layer_for("layercam") == "_head_act"
    assert "LayerCAM heatmap" in {m.value.strip("*") for m in app.markdown}
    assert "needs positive feature maps" in _captions(app)
    app.selectbox(key="method").set_value("gradcam").run()
    assert app.selectbox(key=key).value == "_bn1"
    app.selectbox(key=key).set_value("_blocks.0").run()
    app.selectbox(key="method").set_value("layercam").run()
    _assert_healthy(app)
    assert app.selectbox(key=key).value == "_blocks.0"  # the user's pick stays
    assert not app.warning


def test_an_unlikely_class_gets_a_warning(app: AppTest) -> None:
    classes = next(box for box in app.selectbox if (box.key or "").startswith("class-"))
    classes.set_value(ANOTHER_CLASS).run()
    search = next(box for box in app.selectbox if (box.key or "").startswith("any-class-"))
    search.set_value(gradcam_core.load_model().categories.index("goldfish")).run()
    assert not app.exception
    [warning] = [w.value for w in app.warning]
    assert "almost no probability" in warning and "goldfish" in warning


def test_wording_follows_the_method(app: AppTest) -> None:
    app.selectbox(key="method").set_value("eigencam").run()
    _assert_healthy(app)
    assert "the dominant pattern of the layer's features (the same for every class)" in _summary(app)
    assert "evidence for" not in _summary(app)
    app.selectbox(key="method").set_value("counterfactual").run()
    assert "evidence against" in _summary(app)


def test_large_pictures_make_the_panels_taller(app: AppTest, model_calls) -> None:
    def heights() -> list[int]:
        return [json.loads(chart.proto.spec)["layout"]["height"] for chart in app.get("plotly_chart")[:1]]

    before, calls = heights(), len(model_calls)
    app.toggle(key="large").set_value(True).run()
    _assert_healthy(app)
    after = heights()
    assert after[0] > before[0] + 50  # the panels, drawn for a wider page
    assert len(model_calls) == calls  # a display setting: the model is not run again
