"""The 3-D scan tab: a NIfTI scan with a bright cube explained by a seeded random MONAI 3-D DenseNet121, three
planes that slide without running the model, "Go to the peak", a corrupt upload, and a look in Chromium."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import streamlit as st
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from dashboard import cache, volume_cache
from gradcam_core.volume_view import map_peak
from tests.browser_support import ROOT, chromium, dashboard_server, needs_chromium
from tests.page_text import shown

APP = str(ROOT / "dashboard" / "app.py")
SHAPE = (20, 40, 48)  # slices, rows, columns; 1 x 1 mm pixels, 2.5 mm slices
AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])
SCREENSHOT = ROOT / "docs" / "screenshots" / "scan.png"


@pytest.fixture(scope="module")
def scan_bytes() -> bytes:
    """A .nii.gz scan: noise around a bright cube in the front left of the upper slices."""
    rng = np.random.default_rng(0)
    voxels = rng.normal(0.0, 20.0, SHAPE).astype(np.float32)
    voxels[11:17, 24:34, 30:42] += 600.0
    return gzip.compress(nib.Nifti1Image(np.ascontiguousarray(voxels.T), AFFINE).to_bytes())


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> Path:
    """A seeded random MONAI DenseNet121 (3-D, one input channel, two classes) as .safetensors."""
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    network = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    path = tmp_path_factory.mktemp("scan-model") / "densenet3d.safetensors"
    save_file({name: value.contiguous() for name, value in network.state_dict().items()}, str(path))
    return path


@pytest.fixture
def calls(monkeypatch) -> list:
    """Every explanation the page computes (``explain_volume`` counted where the dashboard calls it)."""
    made = []
    real = volume_cache.explain_volume

    def counted(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(volume_cache, "explain_volume", counted)
    volume_cache.shared_results().clear()
    st.cache_data.clear()
    return made


def _healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _scan_tab() -> AppTest:
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.session_state["view"] = "3-D scan"
    return at.run()


def _planes(at: AppTest) -> list[str]:
    return [url for image in at.image for url in image.value]


def test_three_planes_slide_and_go_to_the_peak_without_running_the_model_again(calls, scan_bytes, weights_path):
    at = _scan_tab()
    _healthy(at)
    assert at.file_uploader(key="scan-upload").label.startswith("Scan (NIfTI")
    at.file_uploader(key="scan-upload").upload("Doe^Jane_head.nii.gz", scan_bytes)
    at.file_uploader(key="scan-weights").upload("densenet3d.safetensors", weights_path.read_bytes()).run()
    _healthy(at)
    assert len(calls) == 1  # the top class by Grad-CAM: the class menu's guesses and the map shown
    result = calls[0]
    assert result.grid == SHAPE and result.raw_map.shape == (2, 2, 2) and result.input_size == (64, 64, 64)
    text = "\n".join(shown(m.value) for m in at.markdown) + "\n".join(shown(c.value) for c in at.caption)
    assert f"answers **{result.predictions[0].label}** ({result.predictions[0].probability:.1%})" in text
    assert "NIfTI · unknown · 48 x 40 x 20 slices · 1 x 1 x 2.5 mm" in text
    assert "Doe" not in text  # the file's name is never shown
    assert [shown(m.value) for m in at.markdown if m.value in ("**Axial**", "**Coronal**", "**Sagittal**")] == [
        "**Axial**", "**Coronal**", "**Sagittal**"]
    planes = _planes(at)
    assert len(planes) == 6  # three planes, three projections
    keys = [s.key for s in at.slider if s.key.startswith("scan-slice-")]
    peak = map_peak(result.raw_map, SHAPE)
    assert [at.slider(key=key).value for key in keys] == [index + 1 for index in peak]  # opened on the peak

    at.slider(key=keys[0]).set_value(3).run()
    _healthy(at)
    moved = _planes(at)
    assert moved[0] != planes[0] and moved[1:3] != planes[1:3]  # the axial plane, and the crosshair elsewhere
    at.selectbox(key="scan-window").set_value("Bone (L 300, W 1500)").run()
    _healthy(at)
    assert _planes(at)[:3] != moved[:3]
    at.session_state["view"] = "Explanation"
    at.run()
    at.session_state["view"] = "3-D scan"
    at.run()
    _healthy(at)
    assert at.slider(key=keys[0]).value == 3 and at.selectbox(key="scan-window").value.startswith("Bone")
    assert not at.file_uploader(key="scan-upload").value  # the uploader came back empty, its files were kept:
    assert sum("In use: the files uploaded earlier" in c.value for c in at.caption) == 2  # the scan and weights
    at.button(key="scan-go-to-peak").click().run()
    _healthy(at)
    assert [at.slider(key=key).value for key in keys] == [index + 1 for index in peak]
    assert len(calls) == 1  # sliders, window, another tab and back, the peak: never the model


def test_a_slow_method_runs_in_the_background_with_progress(calls, monkeypatch, scan_bytes, weights_path) -> None:
    """Score-CAM goes through the worker threads (a progress callback, no spinner in the script); the run is a
    stand-in that reports progress and relabels the Grad-CAM map (a real one runs 1024 3-D forwards)."""
    counted = volume_cache.explain_volume
    progress_seen = []

    def stand_in(volume, model, layer, target, method, **kwargs):
        if method == "scorecam":
            progress_seen.append(kwargs["progress"])
            kwargs["progress"](1, 2)
            return dataclasses.replace(counted(volume, model, layer, target, "gradcam", **kwargs), method="scorecam")
        return counted(volume, model, layer, target, method, **kwargs)

    monkeypatch.setattr(volume_cache, "explain_volume", stand_in)
    at = _scan_tab()
    at.file_uploader(key="scan-upload").upload("scan.nii.gz", scan_bytes)
    at.file_uploader(key="scan-weights").upload("densenet3d.safetensors", weights_path.read_bytes()).run()
    at.selectbox(key="scan-method").set_value("scorecam").run()
    _healthy(at)
    assert len(calls) == 2 and len(progress_seen) == 1 and progress_seen[0] is not None
    text = "\n".join(shown(m.value) for m in at.markdown)
    assert "by Score-CAM at layer" in text


def test_a_corrupt_scan_is_one_sentence(calls) -> None:
    at = _scan_tab()
    at.file_uploader(key="scan-upload").upload("scan.nii.gz", b"\x1f\x8b" + b"not a scan" * 20).run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == ["The .nii.gz file is not a readable gzip file."]
    assert not calls


@contextmanager
def scan_in_chromium(scan: Path, weights: Path) -> Iterator[object]:
    """A dashboard server and Chromium, its 3-D scan tab given ``scan`` and ``weights``: the page, explained."""
    with dashboard_server() as url, chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(180_000)
        page.goto(url)
        page.get_by_role("tab", name="3-D scan").click()
        main = page.locator('[data-testid="stMain"]')
        main.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(0).set_input_files(str(scan))
        page.get_by_text("Patient details are never shown", exact=False).wait_for()
        main.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1).set_input_files(str(weights))
        page.get_by_text("Where the heat is", exact=False).wait_for()
        yield page


@needs_chromium
def test_the_scan_view_in_chromium(scan_bytes, weights_path, tmp_path) -> None:
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(scan_bytes)
    with scan_in_chromium(scan, weights_path) as page:
        main = page.locator('[data-testid="stMain"]')
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
        main.locator('[data-testid="stImage"] img').nth(5).wait_for()  # drawn after the text, on a busy machine
        assert main.locator('[data-testid="stImage"] img').count() == 6
        page.wait_for_timeout(1000)
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": max(1000, int(height))})
        page.wait_for_timeout(800)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert "Doe" not in main.inner_text()
