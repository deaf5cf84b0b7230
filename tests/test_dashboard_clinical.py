"""The dashboard for clinical users: their own model, DICOM images, raw-unit maps and the one-click report."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import safetensors.torch
import torch
import torchvision
from PIL import Image
from pydicom.data import get_testdata_file

import streamlit as st
from streamlit.testing.v1 import AppTest

import gradcam_core
from tests.page_text import shown
from dashboard import cache, downloads, figures
from dashboard.settings import ImageInput, Settings

ROOT = Path(__file__).resolve().parents[1]

APP = str(ROOT / "dashboard" / "app.py")
LABELS = ["effusion", "nodule", "normal"]


def _assert_healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _page_text(at: AppTest) -> str:
    parts = [shown(e.value) for e in [*at.markdown, *at.caption, *at.info]]
    parts += [str(box.options) for box in at.selectbox] + [s.label for s in at.slider]
    return "\n".join(parts)


@pytest.fixture
def fresh() -> AppTest:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=180).run()
    _assert_healthy(at)
    return at


@pytest.fixture(scope="module")
def weights() -> bytes:
    """A resnet18 with a 3-label head, as safetensors bytes."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None, num_classes=len(LABELS)).eval()
    return safetensors.torch.save(model.state_dict())


def _own_model(
    at: AppTest, weights: bytes, labels: bytes, activation: str = "sigmoid", architecture: str = "resnet18"
) -> AppTest:
    at.selectbox(key="model").set_value("own-model").run()
    at.selectbox(key="own-architecture").set_value(architecture)
    at.number_input(key="own-size").set_value(64)
    at.radio(key="own-activation").set_value(activation)
    at.file_uploader(key="own-weights-torchvision").upload("chest.safetensors", weights)
    at.file_uploader(key="own-labels").upload("labels.txt", labels).run()
    return at


# ------------------------------------------------------------------------------------------------ own model


def test_own_multilabel_model_is_explained_with_its_labels_and_hash(fresh: AppTest, weights: bytes) -> None:
    at = _own_model(fresh, weights, "\n".join(LABELS).encode())
    _assert_healthy(at)
    options = at.selectbox(key=next(k for k in _keys(at) if k.startswith("class-"))).options
    assert sorted(option.split(" — ")[0] for option in options[:3]) == sorted(LABELS)
    assert "Multi-label model" in _page_text(at)
    assert len(at.get("plotly_chart")) == 2
    details = next(m.value for m in at.markdown if "Weights SHA-256" in m.value)
    assert hashlib.sha256(weights).hexdigest() in details

    # The probabilities on the page are the model's own sigmoid outputs.
    loaded = gradcam_core.load_custom_model("resnet18", weights, LABELS, activation="sigmoid", input_size=64)
    found = gradcam_core.explain(ROOT / "assets" / "chelsea.png", loaded, top_k=3)
    shown = {o.split(" — ")[0]: o.split(" — ")[1] for o in options[:3]}
    assert shown == {p.label: f"{p.probability:.1%}" for p in found.predictions}
    assert sum(p.probability for p in found.predictions) != pytest.approx(1.0)


def _keys(at: AppTest) -> list[str]:
    return [box.key for box in at.selectbox if box.key]


def test_own_model_architecture_recognised_from_its_weights(fresh: AppTest, weights: bytes) -> None:
    menu = fresh.selectbox(key="model").set_value("own-model").run().selectbox(key="own-architecture")
    assert menu.value == "recognise"  # the default
    at = _own_model(fresh, weights, "\n".join(LABELS).encode(), architecture="recognise")
    _assert_healthy(at)
    assert any(shown(m.value).startswith("**resnet18 (chest.safetensors)** sees") for m in at.markdown)


def test_own_model_waits_for_its_files(fresh: AppTest) -> None:
    fresh.selectbox(key="model").set_value("own-model").run()
    _assert_healthy(fresh)
    assert any("Give your model's files in the sidebar" in i.value for i in fresh.info)
    assert not fresh.get("plotly_chart")


def test_own_model_labels_that_do_not_fit_give_one_sentence(fresh: AppTest, weights: bytes) -> None:
    at = _own_model(fresh, weights, b"only\ntwo\n")
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "label" in error.lower() and "\n" not in error
    assert not at.get("plotly_chart")


def test_malicious_pickle_is_refused_without_running(fresh: AppTest, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buffer = io.BytesIO()
    pickle.dump({"weight": Payload()}, buffer)
    at = _own_model(fresh, buffer.getvalue(), "\n".join(LABELS).encode())
    assert not at.exception
    assert len(at.error) == 1
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ DICOM


def _dicom(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def test_dicom_upload_with_window_control_and_no_patient_data(fresh: AppTest) -> None:
    data = _dicom("CT_small.dcm")
    fresh.file_uploader(key="upload").upload("Doe^John_CT.dcm", data).run()
    _assert_healthy(fresh)
    text = _page_text(fresh)
    assert "DICOM · CT · 128 × 128 px" in text
    assert "Level -38 HU · width 1646 HU" in text  # the file's own window, preselected
    fresh.selectbox(key=next(k for k in _keys(fresh) if k.startswith("window-"))).set_value("Custom…").run()
    level = next(n for n in fresh.number_input if n.label.startswith("Level"))
    width = next(n for n in fresh.number_input if n.label.startswith("Width"))
    assert (level.value, width.value) == (-38.0, 1646.0)
    ds = pydicom.dcmread(io.BytesIO(data))
    for secret in (str(ds.PatientName), str(ds.PatientID), "Doe^John"):
        assert secret not in text
    assert "CT image, frame 1 of 1" in text
    assert any("learned from everyday photos (ImageNet), not medical images" in w.value for w in fresh.warning)
    assert len(fresh.get("plotly_chart")) == 2

    width.set_value(200.0).run()
    _assert_healthy(fresh)
    # The model sees the windowed picture: a narrower window is a new image and a new explanation.
    picture = gradcam_core.render_frame(gradcam_core.read_dicom(data), 0, gradcam_core.Window(-38.0, 200.0))
    expected = gradcam_core.explain(picture, gradcam_core.load_model())
    summary = next(shown(m.value) for m in fresh.markdown if " sees " in m.value)
    assert f"**{expected.predictions[0].label}** ({expected.predictions[0].probability:.1%})" in summary


def test_multi_frame_dicom_has_a_frame_picker(fresh: AppTest) -> None:
    fresh.file_uploader(key="upload").upload("dose.dcm", _dicom("rtdose.dcm")).run()
    _assert_healthy(fresh)
    frame = next(s for s in fresh.slider if s.label == "Frame")
    assert (frame.min, frame.max) == (1, 15)
    frame.set_value(7).run()
    _assert_healthy(fresh)
    assert "frame 7 of 15" in _page_text(fresh)


def test_broken_dicom_gives_one_sentence(fresh: AppTest) -> None:
    data = _dicom("CT_small.dcm")
    fresh.file_uploader(key="upload").upload("scan.dcm", data[: len(data) // 2]).run()
    assert not fresh.exception
    [error] = [e.value for e in fresh.error]
    assert "DICOM" in error and "\n" not in error
    assert not fresh.get("plotly_chart")


# ------------------------------------------------------------------------------------------------ display, report


def test_raw_units_colour_bar_runs_to_the_maps_peak(fresh: AppTest) -> None:
    fresh.toggle(key="raw-units").set_value(True).run()
    _assert_healthy(fresh)
    _, result = _default_result()
    heatmap = figures.heatmap_figure(result.raw_map, (451, 300), "jet", 300, "evidence", result.strength)
    trace = heatmap.data[0]
    assert trace.zmax == pytest.approx(result.strength)
    relative = figures.heatmap_figure(result.raw_map, (451, 300), "jet", 300, "evidence").data[0]
    assert relative.zmax == 1.0
    # Same picture, other units: raw values are the relative ones times the peak.
    np.testing.assert_allclose(np.asarray(trace.z) / result.strength, relative.z, atol=6e-4)
    assert f"Peak **{result.strength:.3g}**" in _page_text(fresh)


def _default_result():
    settings = Settings(
        ImageInput.from_bytes("Cat", (ROOT / "assets" / "chelsea.png").read_bytes()),
        gradcam_core.DEFAULT_MODEL, gradcam_core.load_model().default_layer, None, "gradcam", 0.5, "jet",
    )
    return settings, cache.explain(settings, gradcam_core.load_model())


def test_html_report_holds_the_provenance() -> None:
    settings, result = _default_result()
    model = gradcam_core.load_model()
    image = np.asarray(gradcam_core.load_image(ROOT / "assets" / "chelsea.png"))
    document = downloads.html_report(image, result, settings, model)()
    expected_hash = hashlib.sha256(Path(model.weights_file).read_bytes()).hexdigest()
    for field in (expected_hash, model.title, result.target.label, result.layer, "gradcam", "0.50", "jet",
                  gradcam_core.report.DISCLAIMER, "Cat", f"torch</th><td class=\"code\">{torch.__version__}"):
        assert field in document, field
    assert document.count("data:image/png;base64,") == 3


def test_report_of_a_dicom_image_lists_its_facts_not_its_patient() -> None:
    data = _dicom("CT_small.dcm")
    from dashboard.medical import as_picture

    picture = as_picture(ImageInput.from_bytes("Doe^John.dcm", data))
    model = gradcam_core.load_model()
    settings = Settings(picture, model.name, model.default_layer, None, "gradcam", 0.4, "viridis")
    result = cache.explain(settings, model)
    image = np.asarray(gradcam_core.load_image(picture.data))
    document = downloads.html_report(image, result, settings, model)()
    assert "Modality" in document and ">CT<" in document and "Doe" not in document
    assert str(pydicom.dcmread(io.BytesIO(data)).PatientName) not in document


def test_burned_in_annotation_is_warned_on_the_page_and_in_the_report(fresh: AppTest, lite0) -> None:
    model = lite0
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    fresh.file_uploader(key="upload").upload("scan.dcm", buffer.getvalue()).run()
    assert not fresh.exception
    assert any("burned-in text" in w.value for w in fresh.warning)

    from dashboard.medical import as_picture

    picture = as_picture(ImageInput.from_bytes("Upload 1 (DICOM)", buffer.getvalue()))
    settings = Settings(picture, model.name, model.default_layer, None, "gradcam", 0.5, "jet")
    image = np.asarray(Image.open(io.BytesIO(picture.data)).convert("RGB"))
    report = downloads.html_report(image, cache.explain(settings, model), settings, model)()
    assert 'role="alert"><strong>This file says its pixels carry burned-in text' in report


def _tiny_onnx(path: Path, seed: int) -> Path:
    """A seeded conv → ReLU → pool → linear classifier of ``LABELS``, exported to ``path`` with a free input size."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, len(LABELS)),
    ).eval()
    torch.onnx.export(net, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    return path


def test_an_onnx_model_is_explained_from_the_sidebar(fresh: AppTest, tmp_path: Path) -> None:
    """Another source through the same form: the uploader takes .onnx, class names are asked for, and the map
    comes out of the converted graph."""
    path = _tiny_onnx(tmp_path / "tiny.onnx", seed=0)
    at = fresh.selectbox(key="model").set_value("own-model").run()
    at.selectbox(key="own-source").set_value("onnx").run()
    uploader = at.file_uploader(key="own-weights-onnx")
    assert uploader.label == "Model file (.onnx)"
    assert any("Give the model file and the class names" in c.value for c in at.caption)
    uploader.upload("tiny.onnx", path.read_bytes())
    at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(LABELS).encode()).run()
    _assert_healthy(at)
    assert any("tiny.onnx" in shown(m.value) and "sees" in shown(m.value) for m in at.markdown)
    assert len(at.get("plotly_chart")) == 2


def test_a_hugging_face_model_needs_no_class_names_and_offers_its_own_preprocessing(fresh: AppTest) -> None:
    at = fresh.selectbox(key="model").set_value("own-model").run()
    at.selectbox(key="own-source").set_value("huggingface").run()
    assert at.file_uploader(key="own-weights-huggingface").label == "Model file (.zip)"
    assert at.checkbox(key="own-preprocessing").value  # the model's own, by default
    assert any(c.value == "Give the model file to explain with your model." for c in at.caption)


def test_an_onnx_model_untrustworthy_on_this_image_still_shows_its_predictions(
    fresh: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion passes the load check (a square probe) but differs from onnxruntime on the wide sample: the
    page keeps the predictions, Grad-CAM is refused in one sentence naming what remains, Eigen-CAM explains."""
    import onnx2torch

    convert = onnx2torch.convert

    def wrong_when_wide(*args, **kwargs):  # a converter bug that shows only on non-square inputs
        module = convert(*args, **kwargs)
        first = next(name for name, layer in module.named_modules() if isinstance(layer, torch.nn.Conv2d))
        module.get_submodule(first).register_forward_hook(
            lambda layer, inputs, output: output + 1.0 if output.shape[-1] != output.shape[-2] else None
        )
        return module

    monkeypatch.setattr(onnx2torch, "convert", wrong_when_wide)
    path = _tiny_onnx(tmp_path / "wide.onnx", seed=1)  # not the other test's file, maybe in the shared model cache
    at = fresh.selectbox(key="model").set_value("own-model").run()
    at.selectbox(key="own-source").set_value("onnx").run()
    at.file_uploader(key="own-weights-onnx").upload("wide.onnx", path.read_bytes())
    at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(LABELS).encode()).run()
    assert not at.exception
    [error] = [shown(e.value) for e in at.error]
    assert re.fullmatch(
        r"On this image the PyTorch conversion of the ONNX model differs from onnxruntime by more than 0\.0001, first "
        r"at operator 'Conv' \(node '[^']+'\), so only Score-CAM and Eigen-CAM \(run through onnxruntime\) can "
        r"explain it\.", error
    ), error
    classes = next(box for box in at.selectbox if box.key.startswith("class-"))  # the predictions are there
    assert not classes.disabled and len(classes.options) == len(LABELS) + 1  # + "Another class…"
    at.selectbox(key="method").set_value("eigencam").run()
    _assert_healthy(at)
    assert any("differs from onnxruntime" in shown(w.value) for w in at.warning)  # the notice with the summary
