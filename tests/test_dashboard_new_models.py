"""Every 2-D tab with the new kinds of model: a segmentation model (a MONAI UNet bundle), a gradient-free ONNX graph
(an operator PyTorch cannot convert, run through onnxruntime) and a multi-label model explaining several classes
together. Each tab either works, with the engine's numbers, or says in one sentence what is not available and why.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from gradcam_core import LoadedModel, Objective, WeightedClasses, explain, load_image, load_user_model, trust
from dashboard import cache, controls
from dashboard.tabs.teaching import SCORE_LABEL
from tests.page_text import shown
from tests.segmentation_models import CLASSES, NETWORK_DEF, bundle, unet
from tests.test_dashboard_objectives import (
    APP, CAT, FINDINGS, _assert_healthy, _class_key, _engine_heat, _heat, _panels_spec, _request, _shufflenet, _upload,
)
from tests.test_dashboard_tabs import _heatmaps
from tests.test_onnx_runtime import LABELS, _network, _onnx

KINDS = ("segmentation", "gradient-free", "several classes")
METHOD = {"segmentation": "gradcam", "gradient-free": "eigencam", "several classes": "gradcam"}
"""The sidebar's method for each kind (a gradient-free model starts on Eigen-CAM)."""
NO_GRADIENTS = "which this model cannot give (it runs through onnxruntime)."
SAMPLES = [(title, controls.ASSETS / name) for name, title in controls.SAMPLES.items()]
BACKGROUND = 0
"""A class the segmentation model predicts in a few pixels of the cat and nowhere in a plain red picture."""


def _rare_background() -> bytes:
    """The tiny UNet bundle with its background logit lowered by 1.4: background only on a few textured pixels."""
    network = unet()
    with torch.no_grad():
        network.get_parameter("model.2.conv.bias")[BACKGROUND] -= 1.4
    return bundle(NETWORK_DEF, network)


def _red() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (255, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class App:
    """One page with a model of ``kind`` loaded through the sidebar, and the same model loaded by the engine."""

    kind: str
    at: AppTest
    loaded: LoadedModel
    target: Objective | None

    def visit(self, tab: str) -> AppTest:
        self.at.session_state["view"] = tab
        self.at.run()
        _assert_healthy(self.at)
        return self.at

    def explain(self, image: Path | bytes = CAT, **options: object):
        return explain(image, self.loaded, **{"target": self.target, "method": METHOD[self.kind], **options})


@pytest.fixture(scope="module", params=KINDS)
def app(request) -> App:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    target = None
    if request.param == "segmentation":
        data = _rare_background()
        _upload(at, "monai", "unet.zip", data, CLASSES, architecture="UNet")
        loaded = load_user_model("monai", _request(data, CLASSES, "UNet"))
    elif request.param == "gradient-free":
        data = _onnx(_network(nn.Hardshrink(0.5)), "Shrink")
        at.selectbox(key="model").set_value("own-model").run()
        at.selectbox(key="own-source").set_value("onnx").run()
        at.number_input(key="own-size").set_value(64)
        at.file_uploader(key="own-weights-onnx").upload("tiny.onnx", data)
        at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(LABELS).encode()).run()
        loaded = load_user_model("onnx", _request(data, tuple(LABELS), None))
        assert loaded.gradient_free is not None and at.selectbox(key="method").value == "eigencam"
    else:
        data = _shufflenet(3)
        _upload(at, "torchvision", "chest.safetensors", data, FINDINGS, architecture="shufflenet_v2_x0_5",
                activation="sigmoid")
        loaded = load_user_model("torchvision", _request(data, FINDINGS, "shufflenet_v2_x0_5", "sigmoid"))
        at.radio(key=_class_key(at, "together-")).set_value(True).run()
        target = WeightedClasses({c: 1.0 for c in at.multiselect(key=_class_key(at, "classes-")).value})
    _assert_healthy(at)
    return App(request.param, at, loaded, target)


def _captions(at: AppTest) -> list[str]:
    return [shown(c.value) for c in at.caption]


def _infos(at: AppTest) -> list[str]:
    return [shown(i.value) for i in at.info]


def _present(found) -> list[int]:
    return [int(c) for c in np.unique(found.segmentation)]


def test_explanation_and_its_guided_toggle(app: App) -> None:
    at = app.visit("Explanation")
    found = app.explain()
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(found))
    reason = {
        "segmentation": "Guided Grad-CAM follows one class's score over the whole image, so it is not available for a "
                        "segmentation model's region.",
        "gradient-free": f"Guided Grad-CAM needs the model's gradients, {NO_GRADIENTS}",
        "several classes": f"Guided Grad-CAM follows one class's score, so it is not available for "
                           f"{found.target.label}.",
    }[app.kind]
    assert reason in _captions(at)
    assert "guided" not in [toggle.key for toggle in at.toggle]
    print(app.kind, "explained", found.target.label, "peak", found.strength)


def test_compare(app: App) -> None:
    if app.kind != "segmentation":
        app.at.session_state["compare-kind"] = "Methods"
    at = app.visit("Compare")
    captions = [c for c in _captions(at) if " · peak " in c]
    if app.kind == "segmentation":
        present = _present(app.explain())
        box = at.multiselect(key=next(m.key for m in at.multiselect if m.key.startswith("compare-classes")))
        assert box.options == [CLASSES[c] for c in present]  # only the classes the model predicts somewhere
        found = [app.explain(target=c) for c in box.value]
        assert [f.target.label for f in found] == [f"{CLASSES[c]} (region)" for c in box.value]
        assert any("over the region the model predicts for it" in c for c in _captions(at))
    else:
        box = at.multiselect(key="compare-methods")
        found = [app.explain(method=method) for method in box.value]
        if app.kind == "gradient-free":
            assert box.options == ["Score-CAM", "Eigen-CAM"] and box.value == ["scorecam", "eigencam"]
            assert app.loaded.gradient_free in _captions(at)
        else:
            assert box.value == ["gradcam", "gradcam++", "layercam"]
            assert {f.target.label for f in found} == {app.explain().target.label}  # the classes together
    strongest = max(f.strength for f in found)
    assert len(_heatmaps(at)) == len(found) == len(captions) >= 2
    for caption, f in zip(captions, found):
        assert caption.startswith(f"{f.target.label} {f.target.probability:.1%}")
        share = f" · {f.strength / strongest:.0%} of the strongest" if app.kind == "segmentation" else ""
        assert caption.endswith(f"peak **{f.strength:.3g}**{share}")  # methods: each on its own scale
    print(app.kind, "compared", [(f.target.label, f.method, round(f.strength, 4)) for f in found])


def test_trust_checks(app: App) -> None:
    at = app.visit("Trust checks")
    metrics = {m.label: m.value for m in at.metric}
    found = app.explain()
    if app.kind == "gradient-free":
        curves = trust.deletion_insertion(app.loaded, load_image(CAT), found.raw_map, found.target.index)
        assert metrics["Deletion AUC (lower is better)"] == f"{curves.deletion_auc:.3f}"
        assert metrics["Insertion AUC (higher is better)"] == f"{curves.insertion_auc:.3f}"
        assert f"The sanity check needs the model's gradients, {NO_GRADIENTS}" in _infos(at)
        assert "Rank correlation ρ" not in metrics
        print("faithfulness through onnxruntime", curves.deletion_auc, curves.insertion_auc)
    else:  # the checks follow what the map explains: the predicted region, or several classes together
        curves = trust.deletion_insertion(app.loaded, load_image(CAT), found.raw_map, app.target)
        assert metrics["Deletion AUC (lower is better)"] == f"{curves.deletion_auc:.3f}"
        assert metrics["Insertion AUC (higher is better)"] == f"{curves.insertion_auc:.3f}"
        assert curves.deletion[0] == pytest.approx(found.target.probability, abs=1e-6)
        assert "Rank correlation ρ" in metrics and not any("not available" in info for info in _infos(at))
    assert any("Draw or upload a region" in info for info in _infos(at))  # the region check works for every map


def test_gallery(app: App) -> None:
    at = app.visit("Gallery")
    expected = [(title, app.explain(path, target=None)) for title, path in SAMPLES]
    if app.kind == "segmentation":  # the cat and a red picture, the sidebar's class predicted in the cat only
        _check_thumbnails(at, expected)
        cat, red = app.explain(target=None), app.explain(_red(), target=None)
        print("background pixels: cat", (cat.segmentation == BACKGROUND).sum(), "red",
              (red.segmentation == BACKGROUND).sum())
        assert BACKGROUND in _present(cat) and BACKGROUND not in _present(red)
        assert cat.predictions[0].index != BACKGROUND  # so the sidebar's choice is a target, not the default
        uploads = at.file_uploader(key="upload")
        uploads.set_value([("cat.png", CAT.read_bytes(), "image/png"), ("red.png", _red(), "image/png")]).run()
        menu = at.selectbox(key=_class_key(at))
        before = menu.value
        menu.set_value(BACKGROUND).run()
        at.toggle(key="gallery-same-class").set_value(True).run()
        _assert_healthy(at)
        assert ("red.png: the model predicts no pixel of background here, so that region cannot be explained."
                in _captions(at))
        _check_thumbnails(at, [("cat.png", app.explain(target=BACKGROUND))])
        at.selectbox(key=_class_key(at)).set_value(before).run()  # the sidebar as it was, for the next tab
        at.file_uploader(key="upload").set_value([]).run()
        return
    elif app.kind == "several classes":
        at.toggle(key="gallery-same-class").set_value(True).run()
        _assert_healthy(at)
        expected = [(title, app.explain(path)) for title, path in SAMPLES]
        assert all(f.target.label == expected[0][1].target.label for _, f in expected)
    _check_thumbnails(at, expected)


def _check_thumbnails(at: AppTest, expected: list) -> None:
    """One thumbnail per expected (title, explanation), in order, each captioned with its peak."""
    captions = [c for c in _captions(at) if " · peak " in c]
    assert len(at.get("image")) == len(expected) == len(captions)
    for caption, (title, f) in zip(captions, expected):
        assert caption.startswith(f"**{title}**") and caption.endswith(f"peak {f.strength:.3g}")
    print("gallery peaks", [(title, round(f.strength, 4)) for title, f in expected])


def test_how_it_works(app: App) -> None:
    at = app.visit("How it works")
    if app.kind == "gradient-free":
        assert f"The step-by-step view of Grad-CAM needs the model's gradients, {NO_GRADIENTS}" in _infos(at)
        assert not at.metric and not at.get("plotly_chart")
        return
    found = app.explain()
    assert {m.label: m.value for m in at.metric}[SCORE_LABEL] == f"{found.score:.3f}"
    other = next(box for box in at.selectbox if box.label == "Compare with class")
    names = {option.split(" — ")[0] for option in other.options}
    if app.kind == "segmentation":  # only the classes it predicts somewhere can be compared
        assert names and names <= {CLASSES[c] for c in _present(found)} - {CLASSES[found.target.index]}
    else:
        assert found.target.label not in names and names <= set(FINDINGS)
    print(app.kind, "score", found.score, "compared with", sorted(names))
