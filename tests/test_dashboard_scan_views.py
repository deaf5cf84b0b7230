"""The 3-D scan tab's Compare, Trust check and How it works views on the bright-cube scan and the seeded random
MONAI DenseNet121 of ``test_dashboard_scan`` (its fixtures and helpers, imported), and a look in Chromium."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from gradcam_core.targets import probabilities
from gradcam_core.volume_cam import explain_volume
from gradcam_core.volume_models import VolumeModelRequest, VolumePreprocessing, load_volume_model, volume_input
from gradcam_core.volumes import read_volume
from tests.browser_support import ROOT, needs_chromium
from tests.page_text import shown
from tests.test_dashboard_scan import (  # noqa: F401 (fixtures)
    _healthy, _scan_tab, calls, scan_bytes, scan_in_chromium, weights_path,
)

SCREENSHOTS = ROOT / "docs" / "screenshots"


def _opened(scan: bytes, weights: bytes, view: str) -> AppTest:
    at = _scan_tab()
    at.file_uploader(key="scan-upload").upload("scan.nii.gz", scan)
    at.file_uploader(key="scan-weights").upload("densenet3d.safetensors", weights).run()
    _healthy(at)
    at.segmented_control(key="scan-view").set_value(view).run()
    _healthy(at)
    return at


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(value: object) -> np.ndarray:
    """A Plotly array from a figure's JSON: a list, or a base64 typed array (how Plotly sends NumPy arrays)."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=np.float64)
    flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(np.float64)
    return flat.reshape(tuple(int(n) for n in value["shape"].split(","))) if "shape" in value else flat


def _loaded(weights: bytes):
    return load_volume_model(VolumeModelRequest("monai:densenet121", weights, VolumePreprocessing((64, 64, 64))))


def test_compare_draws_classes_then_methods_on_one_colour_scale(calls, scan_bytes, weights_path) -> None:
    at = _opened(scan_bytes, weights_path.read_bytes(), "Compare")
    panels = [f for f in _figures(at) if any(trace["type"] == "heatmap" for trace in f["data"])]
    classes = {(found.target.index, found.method) for found in calls}
    assert classes == {(0, "gradcam"), (1, "gradcam")} and len(calls) == 2  # the page's class and the other one
    strongest = max(found.strength for found in calls)
    assert len(panels) == 2
    for figure in panels:
        heat = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
        assert heat["zmin"] == 0 and heat["zmax"] == pytest.approx(strongest, rel=1e-6)
        assert _array(heat["z"]).max() <= strongest * (1 + 1e-6)
    assert sorted(a["text"] for a in panels[0]["layout"]["annotations"]) == ["A", "L", "P", "R"]  # axial
    weakest = min(found.strength for found in calls)
    assert any(f"{weakest / strongest:.0%} of the strongest" in shown(c.value) for c in at.caption)

    at.segmented_control(key="scan-compare-kind").set_value("Methods").run()
    _healthy(at)
    methods = [found for found in calls if found.target.index == calls[0].target.index]
    assert sorted(found.method for found in methods) == ["gradcam", "gradcam++", "layercam"]
    panels = [f for f in _figures(at) if any(trace["type"] == "heatmap" for trace in f["data"])]
    assert len(panels) == 3
    for figure in panels:
        heat = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
        assert heat["zmax"] == pytest.approx(max(found.strength for found in methods), rel=1e-6)


def test_the_trust_check_starts_at_the_probability_and_ends_at_the_baselines(calls, scan_bytes, weights_path) -> None:
    at = _opened(scan_bytes, weights_path.read_bytes(), "Trust check")
    result = calls[0]
    curve = next(f for f in _figures(at) if f["data"][0].get("name", "").startswith("Hottest first"))
    hottest, random = curve["data"][0], curve["data"][1]
    assert _array(hottest["customdata"]) == pytest.approx([0, 1, 2, 5, 10, 20, 50, 100], abs=0.01)
    assert _array(hottest["y"])[0] == pytest.approx(100 * result.target.probability, abs=1e-4)  # nothing deleted
    model = _loaded(weights_path.read_bytes())
    inputs = volume_input(read_volume(scan_bytes), model.preprocessing)
    with torch.no_grad():
        blank = model.model.eval()(inputs.mean(dim=(2, 3, 4), keepdim=True).expand_as(inputs))
    baseline = float(probabilities(blank)[0, result.target.index])
    assert _array(hottest["y"])[-1] == pytest.approx(100 * baseline, abs=1e-4)  # everything deleted
    assert _array(random["y"])[-1] == _array(hottest["y"])[-1]
    assert _array(hottest["y"])[0] == _array(random["y"])[0]
    assert [m.label for m in at.metric] == ["Deletion AUC (lower is better)", "Random order AUC"]
    auc, chance = (float(m.value) for m in at.metric)
    verdicts = [*at.success, *at.warning, *at.info]
    assert len(verdicts) == 1  # one verdict, as the areas say (a random model: about a tie)
    expected = "about as fast" if abs(auc - chance) < 0.01 else "faster than" if auc < chance else "no faster"
    assert expected in verdicts[0].value and f"AUC {auc:.3f} against {chance:.3f}" in verdicts[0].value


def test_how_it_works_shows_the_weights_and_every_slice_of_the_map(calls, scan_bytes, weights_path) -> None:
    at = _opened(scan_bytes, weights_path.read_bytes(), "How it works")
    traced = next(found for found in calls if found.trace is not None)
    reference = explain_volume(read_volume(scan_bytes), _loaded(weights_path.read_bytes()), keep_trace=True)
    weights = reference.trace.weights[0].reshape(-1).numpy()
    figures = _figures(at)
    bars = next(f["data"][0] for f in figures if f["data"][0]["type"] == "bar" and "customdata" in f["data"][0])
    values, order = _array(bars["y"]), _array(bars["customdata"]).astype(np.int64)
    assert values.size == weights.size == 1024 and sorted(order) == list(range(1024))
    np.testing.assert_allclose(values, weights[order], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(traced.trace.weights[0].reshape(-1).numpy(), weights, rtol=1e-5, atol=1e-9)
    grids = [f for f in figures if f["data"][0]["type"] == "heatmap"]
    assert len(grids) == 4  # the 2 slices of the 2 x 2 x 2 map, before and after the ReLU
    before = np.array([_array(g["data"][0]["z"]) for g in grids[:2]])
    after = np.array([_array(g["data"][0]["z"]) for g in grids[2:]])
    np.testing.assert_allclose(after, np.maximum(before, 0), atol=1e-7)
    assert after.max() == pytest.approx(reference.strength, rel=1e-5)
    assert sorted(np.abs(before).ravel()) == pytest.approx(
        sorted(np.abs(reference.trace.weighted_sum[0].numpy()).ravel()), rel=1e-5)
    assert "is the mean over the layer's 2 × 2 × 2 = 8 cells" in " ".join(shown(m.value) for m in at.markdown)


@needs_chromium
def test_the_three_views_in_chromium(scan_bytes, weights_path, tmp_path) -> None:
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(scan_bytes)
    with scan_in_chromium(scan, weights_path) as page:
        main = page.locator('[data-testid="stMain"]')
        for view, sign, name in (("Compare", "of the strongest", "scan-compare"),
                                 ("Trust check", "Deletion AUC", "scan-trust"),
                                 ("How it works", "Slice 2 of 2", "scan-teaching")):
            main.locator('[data-testid="stButtonGroup"]').first.get_by_text(view, exact=True).click()
            page.get_by_text(sign, exact=False).first.wait_for()
            page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
            page.wait_for_timeout(1200)
            height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": max(1000, int(height))})
            page.wait_for_timeout(800)
            path = SCREENSHOTS / f"{name}.png" if name == "scan-trust" else tmp_path / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            assert not main.locator('[data-testid="stException"]').count()
