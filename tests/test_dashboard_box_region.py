"""A box as a segmentation region in the sidebar (the engine's map for ``RegionScore(class, box mask)``, the box
outlined, one sentence for an inverted box), and the Trust checks tab for the targets beyond one class: a box
region, several classes together, a binary model's negative side; its numbers are the engine's for the same
objective."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from gradcam_core import BinaryLogit, LoadedModel, Objective, RegionScore, WeightedClasses, explain, load_image
from gradcam_core import load_user_model, trust
from gradcam_core.masks import box_region
from dashboard import cache, figures
from tests.page_text import shown
from tests.segmentation_models import CLASSES, unet_bundle
from tests.test_dashboard_objectives import (
    APP, CAT, FINDINGS, _assert_healthy, _class_key, _engine_heat, _heat, _panels_spec, _request, _shufflenet, _upload,
)

SIZE = (451, 300)  # the cat, width x height
BOX = {"x0": 40, "y0": 30, "x1": 260, "y1": 200}
KINDS = ("box", "several classes", "negative side")


@dataclass
class App:
    """One page with a model of ``kind`` loaded through the sidebar, the same model loaded by the engine, and the
    objective the sidebar asks for."""

    kind: str
    at: AppTest
    loaded: LoadedModel
    target: Objective

    def visit(self, tab: str) -> AppTest:
        self.at.session_state["view"] = tab
        self.at.run()
        _assert_healthy(self.at)
        return self.at


def _box_inputs(at: AppTest) -> dict[str, object]:
    return {w.key.split("-")[1]: w for w in at.number_input if w.key and w.key.startswith("box-")}


def _set_box(at: AppTest, box: dict[str, int]) -> None:
    inputs = _box_inputs(at)
    for name, value in box.items():
        inputs[name].set_value(value)
    at.run()


@pytest.fixture(scope="module", params=KINDS)
def app(request) -> App:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    if request.param == "box":
        data = unet_bundle()
        _upload(at, "monai", "unet.zip", data, CLASSES, architecture="UNet")
        loaded = load_user_model("monai", _request(data, CLASSES, "UNet"))
        index = explain(CAT, loaded).target.index
        at.radio(key=_class_key(at, "region-")).set_value(True).run()
        _assert_healthy(at)
        assert {name: w.value for name, w in _box_inputs(at).items()} == {"x0": 0, "y0": 0, "x1": 451, "y1": 300}
        _set_box(at, BOX)
        mask = box_region(tuple(BOX.values()), SIZE, loaded.preprocessing.input_size(*SIZE))
        target = RegionScore(index, mask)
    elif request.param == "several classes":
        data = _shufflenet(3)
        _upload(at, "torchvision", "chest.safetensors", data, FINDINGS, architecture="shufflenet_v2_x0_5",
                activation="sigmoid")
        loaded = load_user_model("torchvision", _request(data, FINDINGS, "shufflenet_v2_x0_5", "sigmoid"))
        at.radio(key=_class_key(at, "together-")).set_value(True).run()
        target = WeightedClasses({c: 1.0 for c in at.multiselect(key=_class_key(at, "classes-")).value})
    else:
        data = _shufflenet(1)
        _upload(at, "torchvision", "xray.safetensors", data, ("pneumonia",), architecture="shufflenet_v2_x0_5")
        loaded = load_user_model("torchvision", _request(data, ("pneumonia",), "shufflenet_v2_x0_5"))
        at.radio(key=_class_key(at, "evidence-")).set_value(True).run()
        target = BinaryLogit(False)
    _assert_healthy(at)
    return App(request.param, at, loaded, target)


def test_the_map_is_the_engines_for_the_sidebars_objective(app: App) -> None:
    at = app.visit("Explanation")
    found = explain(CAT, app.loaded, target=app.target)
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(found))
    if app.kind != "box":
        return
    default = explain(CAT, app.loaded)
    assert not np.array_equal(_engine_heat(found), _engine_heat(default))
    # The box at the model's input (64 x 96 here) is the region explained, and the mask panel outlines it.
    assert found.region.shape == (64, 96) and np.array_equal(found.region, app.target.mask.numpy())
    # Cells whose centres fall in the box: rows 6-42 (centres 30.5-199.2 px), columns 9-54 (44.6-257.9 px).
    assert found.region.sum() == 37 * 46 and found.region[6:43, 9:55].all()
    expected = [shape.path for shape in figures.outline(go.Figure(), found.region, SIZE, "4").layout.shapes]
    outline = [shape["path"] for shape in _panels_spec(at)["layout"]["shapes"] if shape["xref"] == "x4"]
    assert outline == expected and len(outline) == 2  # one rectangle: a dark line under a dashed white one
    assert "A box of 220 × 170 px of the 451 × 300 px image, from (40, 30)." in [shown(c.value) for c in at.caption]
    print("box region", int(found.region.sum()), "of", found.region.size, "cells; peak", found.strength,
          "default peak", default.strength)


def test_trust_checks_follow_the_objective(app: App) -> None:
    at = app.visit("Trust checks")
    found = explain(CAT, app.loaded, target=app.target)
    picture = load_image(CAT)
    curves = trust.deletion_insertion(app.loaded, picture, found.raw_map, app.target)
    check = trust.sanity_check(app.loaded, picture, found.layer, app.target,
                               randomized=trust.randomized_copy(app.loaded, found.layer))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Deletion AUC (lower is better)"] == f"{curves.deletion_auc:.3f}"
    assert metrics["Insertion AUC (higher is better)"] == f"{curves.insertion_auc:.3f}"
    assert metrics["Rank correlation ρ"] == f"{check.similarity:.2f}"
    assert not any("not available" in shown(i.value) for i in at.info)
    assert curves.objective == app.target  # a region: the very object (compared by identity)
    assert curves.deletion[0] == pytest.approx(found.target.probability, abs=1e-6)  # the explained probability
    caption = next(shown(c.value) for c in at.caption if c.value.startswith("The curves follow"))
    assert caption.startswith(f"The curves follow the probability of **{found.target.label}**")
    if app.kind == "box":
        assert "averaged over the region explained" in caption
    print(app.kind, found.target.label, "p", round(found.target.probability, 4), "deletion AUC",
          round(curves.deletion_auc, 4), "random", round(curves.random_deletion_auc, 4),
          "rho", round(check.similarity, 3))


@pytest.mark.parametrize("app", ["box"], indirect=True)
def test_an_inverted_box_gives_one_sentence(app: App) -> None:
    at = app.visit("Explanation")
    _set_box(at, {"x0": 300})  # right of x1 = 260
    _assert_healthy(at)
    warnings = [shown(w.value) for w in at.warning]
    assert ("The box needs x0 < x1 and y0 < y1 (it has 300 to 260 and 30 to 200), so the predicted region is "
            "explained until it does.") in warnings
    assert np.array_equal(_heat(_panels_spec(at)), _engine_heat(explain(CAT, app.loaded)))
    _set_box(at, {"x0": BOX["x0"]})  # back to the fixture's box, whatever test runs next
    _assert_healthy(at)
