"""The dashboard's targets beyond one class: a segmentation model uploaded through the sidebar (predicted mask
panel, explained class and region), several classes of a multi-label model together, a binary model's negative
side; every map checked against the engine's map for the same objective."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import streamlit as st
import torch
import torchvision
from streamlit.testing.v1 import AppTest

import gradcam_core
from gradcam_core import BinaryLogit, ModelRequest, WeightedClasses
from gradcam_core.masks import class_colour
from gradcam_core.preprocess import IMAGENET_MEAN, IMAGENET_STD
from dashboard import cache, figures
from tests.page_text import shown
from tests.segmentation_models import CLASSES, unet_bundle

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
CAT = ROOT / "assets" / "chelsea.png"  # the first sample, 451 x 300
FINDINGS = ("effusion", "nodule", "normal")


def _assert_healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def fresh() -> AppTest:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    _assert_healthy(at)
    return at


def _upload(at: AppTest, source: str, name: str, weights: bytes, labels: tuple[str, ...], **form) -> AppTest:
    """The sidebar's own-model form filled in as a user would: source, architecture, size 64, files."""
    at.selectbox(key="model").set_value("own-model").run()
    if source != "torchvision":
        at.selectbox(key="own-source").set_value(source).run()
        at.text_input(key=f"own-architecture-{source}").input(form.pop("architecture"))
    else:
        at.selectbox(key="own-architecture").set_value(form.pop("architecture"))
    at.number_input(key="own-size").set_value(64)
    at.radio(key="own-activation").set_value(form.pop("activation", "softmax"))
    at.file_uploader(key=f"own-weights-{source}").upload(name, weights)
    at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(labels).encode()).run()
    _assert_healthy(at)
    return at


def _request(weights: bytes, labels: tuple[str, ...], architecture: str, activation: str = "softmax") -> ModelRequest:
    """What the form asks of the engine (ImageNet normalisation, the form's default)."""
    return ModelRequest(weights=weights, labels="\n".join(labels).encode(), architecture=architecture,
                        activation=activation, input_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _panels_spec(at: AppTest) -> dict:
    """The linked panels' Plotly figure (the first chart of the Explanation tab)."""
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _heat(spec: dict) -> np.ndarray:
    """The heatmap panel's values (Plotly sends arrays as base64 typed arrays)."""
    z = next(t for t in spec["data"] if t["type"] == "heatmap" and t.get("showscale", True))["z"]
    shape = tuple(int(n) for n in z["shape"].split(","))
    return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)


def _engine_heat(found: gradcam_core.Explanation) -> np.ndarray:
    """The page's heatmap grid for the engine's explanation (what ``figures.heatmap_trace`` sends)."""
    return np.array(figures.heatmap_trace(found.raw_map, (451, 300), "jet", "evidence").z)


def _class_key(at: AppTest, prefix: str = "class-") -> str:
    return next(w.key for w in [*at.selectbox, *at.radio, *at.multiselect] if w.key and w.key.startswith(prefix))


# ------------------------------------------------------------------------------------------------ segmentation


def test_a_segmentation_model_shows_its_mask_and_explains_the_chosen_class(fresh: AppTest) -> None:
    bundle = unet_bundle()
    at = _upload(fresh, "monai", "unet.zip", bundle, CLASSES, architecture="UNet")
    loaded = gradcam_core.load_user_model("monai", _request(bundle, CLASSES, "UNet"))
    top = gradcam_core.explain(CAT, loaded)
    titles = [shown(m.value) for m in at.markdown]
    assert "**Predicted mask**" in titles and "**Overlay**" in titles
    spec = _panels_spec(at)
    assert [spec["layout"][f"xaxis{s}"]["matches"] for s in ("2", "3", "4")] == ["x", "x", "x"]  # linked
    assert np.array_equal(_heat(spec), _engine_heat(top))
    present = [int(c) for c in np.argsort(-np.bincount(top.segmentation.ravel(), minlength=3)) if (top.segmentation == c).any()]
    legend = [t for t in spec["data"] if t["type"] == "scatter"]
    assert [t["name"] for t in legend] == [CLASSES[c] for c in present]
    assert [t["marker"]["color"] for t in legend] == ["rgb({},{},{})".format(*class_colour(c)) for c in present]
    outline = [shape["path"] for shape in spec["layout"]["shapes"] if shape["xref"] == "x4"]
    assert outline and np.array_equal(top.region, top.segmentation == top.target.index)
    caption = next(shown(c.value) for c in at.caption if "outlines the region explained" in c.value)
    assert f"where the model sees {CLASSES[top.target.index]}: {top.region.mean():.0%} of the image" in caption
    print("present", [CLASSES[c] for c in present], "default", top.target.label, "peak", top.strength)

    # Another class: its predicted region is explained and outlined.
    other = next(c for c in present if c != top.target.index)
    at.selectbox(key=_class_key(at)).set_value(other).run()
    _assert_healthy(at)
    found = gradcam_core.explain(CAT, loaded, target=other)
    changed = _panels_spec(at)
    assert np.array_equal(_heat(changed), _engine_heat(found)) and not np.array_equal(_heat(changed), _heat(spec))
    moved = [shape["path"] for shape in changed["layout"]["shapes"] if shape["xref"] == "x4"]
    assert moved and moved != outline
    assert np.array_equal(found.region, found.segmentation == other)
    print("other", found.target.label, "peak", found.strength, "outline paths", len(outline), "->", len(moved))


# ------------------------------------------------------------------------------------------------ classifiers


def _shufflenet(outputs: int) -> bytes:
    """A seeded shufflenet_v2_x0_5 whose batch norms hold one random batch's statistics (logits about 1)."""
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=outputs)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        net.train()(torch.randn(8, 3, 64, 64))
    return safetensors.torch.save(net.eval().state_dict())


def test_several_classes_of_a_multi_label_model_together(fresh: AppTest) -> None:
    weights = _shufflenet(3)
    at = _upload(fresh, "torchvision", "chest.safetensors", weights, FINDINGS, architecture="shufflenet_v2_x0_5",
                 activation="sigmoid")
    loaded = gradcam_core.load_user_model("torchvision", _request(weights, FINDINGS, "shufflenet_v2_x0_5", "sigmoid"))
    at.radio(key=_class_key(at, "together-")).set_value(True).run()
    _assert_healthy(at)
    chosen = at.multiselect(key=_class_key(at, "classes-")).value
    assert len(chosen) == 2  # the top two, by default
    together = gradcam_core.explain(CAT, loaded, target=WeightedClasses({c: 1.0 for c in chosen}))
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(together))
    assert any("equal weights (1 each)" in c.value for c in at.caption)
    label = " + ".join(FINDINGS[c] for c in sorted(chosen))
    assert any(label in shown(m.value) for m in at.markdown)  # "...the score for **effusion + nodule**"
    alone = [gradcam_core.explain(CAT, loaded, target=c) for c in chosen]
    assert all(not np.array_equal(_engine_heat(together), _engine_heat(one)) for one in alone)
    print("together", together.target.label, "score", together.score, "=", sum(one.score for one in alone))
    assert together.score == pytest.approx(sum(one.score for one in alone), rel=1e-5)

    at.multiselect(key=_class_key(at, "classes-")).set_value([0, 1, 2]).run()
    _assert_healthy(at)
    three = gradcam_core.explain(CAT, loaded, target=WeightedClasses({0: 1.0, 1: 1.0, 2: 1.0}))
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(three))


def test_the_negative_side_of_a_binary_model(fresh: AppTest) -> None:
    weights = _shufflenet(1)
    at = _upload(fresh, "torchvision", "xray.safetensors", weights, ("pneumonia",), architecture="shufflenet_v2_x0_5")
    loaded = gradcam_core.load_user_model("torchvision", _request(weights, ("pneumonia",), "shufflenet_v2_x0_5"))
    positive = gradcam_core.explain(CAT, loaded)
    evidence = at.radio(key=_class_key(at, "evidence-"))
    assert evidence.options == [f"pneumonia — {positive.target.probability:.1%}",
                                f"not pneumonia — {1 - positive.target.probability:.1%}"]
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(positive))
    evidence.set_value(True).run()
    _assert_healthy(at)
    negative = gradcam_core.explain(CAT, loaded, target=BinaryLogit(False))
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(negative))
    assert not np.array_equal(_engine_heat(negative), _engine_heat(positive))
    print("p(pneumonia)", positive.target.probability, "peaks", positive.strength, negative.strength)
