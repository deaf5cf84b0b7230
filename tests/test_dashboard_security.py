"""The dashboard on a shared server: uploads bounded on the server, names shown as text, sessions kept apart."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import streamlit as st
import torch
import torchvision
from streamlit.testing.v1 import AppTest

import gradcam_core
from dashboard import cache, uploads
from dashboard.text import WORD_JOINER, plain, plotly_text

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
HOSTILE_LABELS = [
    "![x](http://10.255.255.1/pixel.png)",
    "see http://example.com/phish now",
    "<img src=http://10.255.255.1/p.png>",
]
HOSTILE_WEIGHTS_NAME = "[click](http://example.com).safetensors"
MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title")


def _fresh() -> AppTest:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception
    return at


def _healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _markdown_sources(at: AppTest) -> list[str]:
    """The Markdown source of every element Streamlit renders as Markdown."""
    return [element.value for kind in MARKDOWN_ELEMENTS for element in at.get(kind)]


def _shown(source: str) -> str:
    """What a Markdown source made by ``plain`` reads as on the page (escapes and word joiners gone)."""
    return re.sub(r"\\(.)", r"\1", source).replace(WORD_JOINER, "")


@pytest.fixture(scope="module")
def weights() -> bytes:
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None, num_classes=len(HOSTILE_LABELS)).eval()
    return safetensors.torch.save(model.state_dict())


def _own_model(at: AppTest, weights: bytes, name: str, labels: list[str]) -> AppTest:
    at.selectbox(key="model").set_value("own-model").run()
    at.number_input(key="own-size").set_value(64)
    at.file_uploader(key="own-weights-torchvision").upload(name, weights)
    at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(labels).encode()).run()
    return at


# ------------------------------------------------------------------------------------------------ text helpers


@pytest.mark.parametrize("name", [*HOSTILE_LABELS, HOSTILE_WEIGHTS_NAME, "www.example.com", "a@b.org", "$x$ `y` *z*"])
def test_plain_escapes_every_markdown_construct_and_link(name: str) -> None:
    source = plain(name)
    assert _shown(source) == name
    assert not re.search(r"(?<!\\)[\[\]()<>`*$!]", source)  # every special character escaped
    assert "://" not in source and "www." not in source.lower() and "b@" not in source  # no autolink can form


def test_plain_flattens_control_characters() -> None:
    assert plain("tabby\n# heading\x1b[31m") == "tabby \\# heading \\[31m"


def test_plotly_text_has_no_tag_and_no_template() -> None:
    text = plotly_text("<a href='http://x'>%{y}</a>")
    assert "<" not in text and "%{" not in text and text.startswith("&lt;a href=")


# ------------------------------------------------------------------------------------------------ uploads


def test_an_upload_over_its_limit_is_refused_before_decoding(monkeypatch) -> None:
    """The widget's 25 MB limit is enforced on the bytes received, whatever the client (AppTest skips the browser)."""
    decoded: list[object] = []
    real = gradcam_core.load_image
    monkeypatch.setattr(gradcam_core, "load_image", lambda *a, **k: decoded.append(a) or real(*a, **k))
    at = _fresh()
    decoded.clear()
    huge = b"\x89PNG\r\n\x1a\n" + bytes(uploads.IMAGE_BYTES)
    at.file_uploader(key="upload").set_value([("big.png", huge, "image/png")]).run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert _shown(error) == f"The upload is {len(huge) / 2**20:.1f} MB, more than the {uploads.IMAGE_MB} MB limit."
    assert _shown(error) == "The upload is 25.0 MB, more than the 25 MB limit."
    assert not decoded and not at.get("plotly_chart")


def test_several_uploads_name_the_one_over_the_limit() -> None:
    at = _fresh()
    small = (ROOT / "assets" / "coffee.png").read_bytes()
    at.file_uploader(key="upload").set_value(
        [("cup.png", small, "image/png"), ("big.png", bytes(uploads.IMAGE_BYTES + 1), "image/png")]
    ).run()
    [error] = [e.value for e in at.error]
    assert _shown(error).startswith("Upload 2 is 25.0 MB, more than the 25 MB limit")
    assert len(at.get("plotly_chart")) == 2  # the other upload is explained


@pytest.mark.parametrize(
    ("limit", "what"), [(uploads.WEIGHTS_MB, "the weights file"), (uploads.LABELS_MB, "the class names file")]
)
def test_received_checks_the_real_size(limit: int, what: str) -> None:
    reads: list[bool] = []
    upload = SimpleNamespace(size=limit * 2**20 + 1, getvalue=lambda: reads.append(True) or b"")
    with pytest.raises(uploads.UploadTooLarge, match=rf"^The {what[4:]} is [\d.]+ MB, more than the {limit} MB limit\.$"):
        uploads.received(upload, limit, what)
    assert not reads  # refused without touching the bytes


# ------------------------------------------------------------------------------------------------ names are data


def test_hostile_labels_and_file_name_stay_text_on_every_tab(weights: bytes) -> None:
    at = _own_model(_fresh(), weights, HOSTILE_WEIGHTS_NAME, HOSTILE_LABELS)
    _healthy(at)
    seen = []
    for tab in ("Explanation", "Compare", "Trust checks", "Gallery", "How it works"):
        at.session_state["view"] = tab
        at.run()
        _healthy(at)
        sources = _markdown_sources(at)
        for source in sources:
            assert "://" not in source and not re.search(r"(?<!\\)(<img|\]\()", source), (tab, source)
        seen += [_shown(source) for source in sources]
    page = "\n".join(seen)
    assert HOSTILE_WEIGHTS_NAME in page  # shown, as text
    assert sum(label in page for label in HOSTILE_LABELS) >= 2


# ------------------------------------------------------------------------------------------------ sessions


def test_two_sessions_with_the_same_weights_keep_their_own_names(weights: bytes) -> None:
    alice = _own_model(_fresh(), weights, "alice-mri.safetensors", ["a", "b", "c"])
    _healthy(alice)
    bob = _own_model(AppTest.from_file(APP, default_timeout=240).run(), weights, "bob.safetensors", ["a", "b", "c"])
    _healthy(bob)
    bob_page = "\n".join(_shown(source) for source in _markdown_sources(bob))
    assert "**resnet18 (bob.safetensors)** sees" in bob_page
    assert "alice" not in bob_page
    alice.run()
    alice_page = "\n".join(_shown(source) for source in _markdown_sources(alice))
    assert "**resnet18 (alice-mri.safetensors)** sees" in alice_page and "bob" not in alice_page


def test_an_unavailable_model_shows_no_server_path() -> None:
    missing = [status for status in gradcam_core.available_models() if not status.available]
    if not missing:
        pytest.skip("every registered model's weights are on this machine")
    at = _fresh()
    at.selectbox(key="model").set_value(missing[0].name).run()
    assert not at.exception
    notes = "\n".join(_markdown_sources(at))
    assert f"{missing[0].title} is not installed on this server" in _shown(notes)
    assert "checkpoints" not in notes and not re.search(r"/\w+/", _shown(notes))


def test_upload_names_never_reach_the_server_log(caplog) -> None:
    at = _fresh()
    broken_scan = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 10
    at.file_uploader(key="upload").set_value(
        [("Doe^John_brain.dcm", broken_scan, "application/dicom"), ("Roe^Jane.png", b"\x89PNG broken", "image/png")]
    ).run()
    assert not at.exception
    assert at.error  # both refused, each with its sentence
    page = "\n".join(_shown(source) for source in _markdown_sources(at))
    assert "Doe" not in page and "John" not in page  # a DICOM file is named by its place
    assert "Doe" not in caplog.text and "Roe" not in caplog.text
