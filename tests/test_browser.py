"""End-to-end: a real `streamlit run` server driven by Debian's chromium (never a downloaded browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect
from PIL import Image

from tests.browser_support import ROOT, chromium, dashboard_server, needs_chromium, screenshot

SCREENSHOTS = ROOT / "docs" / "screenshots"
TIMEOUT_MS = 90_000

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A dashboard server on a free port; killed when the module's tests are done."""
    with dashboard_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(server)
    _settle(tab)
    yield tab
    context.close()


def _settle(page) -> None:
    """Wait until the script has finished and the three panels are drawn."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    page.get_by_text("Grad-CAM heatmap", exact=True).wait_for()
    main = page.locator('[data-testid="stMain"]')
    main.locator(".js-plotly-plot").nth(1).wait_for()  # the linked panels and the predictions
    page.wait_for_timeout(300)


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _pick(page, label: str, option: str) -> None:
    """Open the sidebar select box called ``label`` and click the option containing ``option``."""
    page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option").filter(has_text=option).first.click()


def _screenshot(page, name: str) -> None:
    screenshot(page, SCREENSHOTS / name)


def test_first_load_shows_the_sample_explained(page) -> None:
    for title in ("Original", "Grad-CAM heatmap", "Overlay", "Top predictions"):
        assert page.get_by_text(title, exact=True).is_visible()
    # Retried: while a rerun finishes, Streamlit keeps the previous run's (stale) elements for a moment.
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(2, timeout=TIMEOUT_MS)
    assert "cat" in _main_text(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    _screenshot(page, "dashboard.png")


def test_class_and_opacity(page) -> None:
    _pick(page, "Class", "tabby")
    page.get_by_text("evidence for tabby").wait_for()
    slider = page.get_by_role("slider", name="Heatmap opacity")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.get_by_text("at 60% opacity").wait_for()
    _settle(page)
    assert "tabby" in _main_text(page)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_the_three_panels_zoom_together(page) -> None:
    panels = page.locator('[data-testid="stMain"] .js-plotly-plot').first
    box = panels.bounding_box()
    left, top = box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.3
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move(left + 80, top + 60, steps=8)  # drag a box on the original picture
    page.mouse.up()
    page.wait_for_timeout(500)
    ranges = panels.evaluate("""plot => ['', '2', '3'].map(n => [plot._fullLayout['xaxis' + n].range,
                                                                   plot._fullLayout['yaxis' + n].range])""")
    assert ranges[0] == ranges[1] == ranges[2]
    (x0, x1), (y0, y1) = ranges[0]
    assert 0 < x1 - x0 < 451 / 2 and 0 < y0 - y1 < 300 / 2  # zoomed in (the sample is 451 x 300 px)


def test_overlay_download(page) -> None:
    with page.expect_download() as download:
        page.get_by_role("button", name="Overlay PNG").click()
    assert download.value.suggested_filename == "cat-overlay.png"
    assert Path(download.value.path()).read_bytes().startswith(b"\x89PNG")
    assert page.locator('[data-testid="stException"]').count() == 0


def test_upload_is_explained(page, tmp_path) -> None:
    photo = tmp_path / "launch.png"
    Image.open(ROOT / "assets" / "rocket.jpg").save(photo)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    page.get_by_text("launch.png ·").wait_for()
    _settle(page)
    # Retried: while a rerun finishes, Streamlit keeps the previous run's (stale) elements for a moment.
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(2, timeout=TIMEOUT_MS)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    _screenshot(page, "upload.png")


def test_corrupt_upload_shows_one_sentence(page, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(broken))
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for()
    assert "image" in error.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').is_visible()


def test_teaching_tab(page) -> None:
    page.get_by_role("tab", name="How it works").click()
    for title in ("1 · The forward pass", "2 · The weights", "3 · The weighted sum", "4 · Enlarged", "5 · Another class"):
        page.get_by_text(title).first.wait_for()
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    main = page.locator('[data-testid="stMain"]')
    main.locator(".js-plotly-plot").nth(9).wait_for()
    page.get_by_text("Both maps on the same colour scale").first.wait_for()
    page.wait_for_timeout(1000)
    assert "the 8 channels with the largest weights out of 1280" in _main_text(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    _screenshot(page, "teaching.png")


def _feature_maps_done(page) -> int:
    """How many feature maps the running Score-CAM has tested, read from its progress bar."""
    text = page.get_by_text("Score-CAM: testing the image with feature map").first.inner_text()
    return int(re.search(r"feature map (\d+) of", text).group(1))


def test_slow_method_survives_a_click_and_can_be_cancelled(page) -> None:
    _pick(page, "Method", "Score-CAM")
    page.get_by_text("Score-CAM: testing the image with feature map").wait_for()
    expect(page.get_by_text(re.compile(r"feature map [1-9]\d* of"))).to_be_visible(timeout=TIMEOUT_MS)
    seen = [_feature_maps_done(page)]
    slider = page.get_by_role("slider", name="Heatmap opacity")
    slider.focus()
    page.keyboard.press("ArrowRight")  # reruns the page while Score-CAM runs
    for _ in range(12):
        page.wait_for_timeout(250)
        seen.append(_feature_maps_done(page))
    assert seen == sorted(seen), f"the work restarted after the click: {seen}"
    assert seen[-1] > seen[0]
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("— Grad-CAM, layer").wait_for()  # back to the default method, without waiting for Score-CAM
    _settle(page)
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(2, timeout=TIMEOUT_MS)
    assert "Score-CAM" not in _main_text(page)
    assert page.get_by_role("button", name="Cancel").count() == 0
    _healthy(page)


def test_own_model_above_the_image_limit_is_recognised(page, tmp_path) -> None:
    """A 28 MB DenseNet-121 checkpoint: over the images' 25 MB, within the server's 500 MB; no architecture named."""
    import safetensors.torch
    import torch
    import torchvision

    weights, labels = tmp_path / "chest.safetensors", tmp_path / "labels.txt"
    with torch.device("meta"):  # only the names and shapes matter here; zeros are written below
        shapes = torchvision.models.densenet121(weights=None, num_classes=4).state_dict()
    safetensors.torch.save_file({key: torch.zeros(value.shape, dtype=value.dtype) for key, value in shapes.items()},
                                weights)
    labels.write_text("normal\npneumonia\neffusion\ncardiomegaly\n", encoding="utf-8")
    assert weights.stat().st_size > 25 * 2**20
    _pick(page, "Neural network", "Your own model")
    page.get_by_text("Give the model file and the class names").wait_for()
    uploaders = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    uploaders.nth(1).set_input_files(str(weights))
    uploaders.nth(2).set_input_files(str(labels))
    page.get_by_text("densenet121 (chest.safetensors) sees").wait_for()
    _settle(page)
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(2, timeout=TIMEOUT_MS)
    _healthy(page)


def _open_tab(page, name: str, ready: str) -> None:
    """Click the tab ``name`` and wait for the text ``ready`` and the end of the run."""
    page.get_by_role("tab", name=name).click()
    page.get_by_text(ready).first.wait_for()
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    page.wait_for_timeout(800)


def _healthy(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def test_compare_tab(page) -> None:
    _open_tab(page, "Compare", "of the strongest")
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(3, timeout=TIMEOUT_MS)
    assert "100% of the strongest" in _main_text(page)
    _healthy(page)
    _screenshot(page, "compare.png")


def test_trust_tab(page) -> None:
    _open_tab(page, "Trust checks", "Rank correlation ρ")
    text = _main_text(page)
    assert "Deletion AUC" in text and "Insertion AUC" in text and "Draw or upload a region" in text
    _healthy(page)
    _screenshot(page, "trust.png")


def test_dicom_upload_hides_the_patient(page) -> None:
    from pydicom.data import get_testdata_file

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(get_testdata_file("CT_small.dcm"))
    page.get_by_text("DICOM · CT · 128 × 128 px").wait_for()
    page.get_by_text("CT image, frame 1 of 1 ·").wait_for()
    _settle(page)
    expect(page.locator('[data-testid="stMain"] .js-plotly-plot')).to_have_count(2, timeout=TIMEOUT_MS)
    whole_page = page.locator("body").inner_text()
    for tag in ("CompressedSamples", "1CT1", "JFK IMAGING"):  # the file's patient name, ID and institution
        assert tag not in whole_page
    # Streamlit's uploader lists the file the user picked; the app itself never repeats its name.
    assert "CT_small" not in page.locator('[data-testid="stMain"]').inner_text()
    _healthy(page)
    _screenshot(page, "dicom.png")


def test_gallery_of_uploads(page, tmp_path) -> None:
    files = [tmp_path / "cat.png", tmp_path / "cup.png"]
    Image.open(ROOT / "assets" / "chelsea.png").save(files[0])
    Image.open(ROOT / "assets" / "coffee.png").save(files[1])
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
    page.get_by_text("Image to explain").wait_for()
    _settle(page)
    _open_tab(page, "Gallery", "2 uploaded images")
    expect(page.locator('[data-testid="stMain"] [data-testid="stImage"]')).to_have_count(2, timeout=TIMEOUT_MS)
    assert "espresso" in _main_text(page)
    _healthy(page)
