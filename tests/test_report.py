"""Tests of gradcam_core.report: the HTML provenance report opens and holds every field."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import platform
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import gradcam_core
from gradcam_core import explain
from gradcam_core.report import DISCLAIMER, MAX_REPORT_SIDE, build_report, library_versions, weights_sha256

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Document(HTMLParser):
    """Checks nesting and collects images, table rows and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag == "title":
            self._in_title = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(document: str) -> Document:
    parser = Document()
    parser.feed(document)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def fields(parsed: Document) -> dict[str, str]:
    return {row[0]: row[1] for row in parsed.rows if len(row) == 2}


def decode_png(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix) :], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img


@pytest.fixture(scope="module")
def chelsea_result(lite0, assets):
    return explain(assets / "chelsea.png", model=lite0)


@pytest.fixture(scope="module")
def report(chelsea_result, lite0) -> str:
    return build_report(
        chelsea_result,
        model_title=lite0.title,
        weights_file=lite0.weights_file,
        alpha=0.45,
        colormap="viridis",
        image_name="chelsea.png",
        extra={"Modality": "CT", "Frames": "1"},
        now=NOW,
    )


def test_report_is_well_formed_html(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    parsed = parse(report)
    assert parsed.tags[:2] == ["html", "head"]
    assert "body" in parsed.tags and parsed.title == "Grad-CAM report — chelsea.png"
    assert '<meta charset="utf-8">' in report


def test_three_images_decode_as_pngs_of_the_right_aspect(report: str, chelsea_result) -> None:
    parsed = parse(report)
    assert len(parsed.images) == 3
    assert [img["id"] for img in parsed.images] == ["image", "heatmap", "overlay"]
    width, height = chelsea_result.image.size
    pictures = [decode_png(img["src"]) for img in parsed.images]
    for picture in pictures:
        assert picture.mode == "RGB"
        assert max(picture.size) <= MAX_REPORT_SIDE
        assert picture.width / picture.height == pytest.approx(width / height, rel=0.01)
    image, heatmap, overlay = (np.asarray(p, np.int16) for p in pictures)
    assert image.shape == heatmap.shape == overlay.shape
    # The overlay is the blend of the two others at alpha = 0.45.
    blend = np.rint(0.55 * image + 0.45 * heatmap)
    assert np.abs(overlay - blend).max() <= 1
    assert np.array_equal(np.asarray(pictures[0]), np.asarray(chelsea_result.image.convert("RGB")))


def test_large_images_are_downscaled(lite0) -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (900, 2400, 3), dtype=np.uint8))
    result = explain(big, model=lite0)
    document = build_report(
        result, model_title=lite0.title, weights_file=None, alpha=0.5, colormap="jet", image_name="big.png", now=NOW
    )
    for img in parse(document).images:
        picture = decode_png(img["src"])
        assert picture.size == (1024, 384)
    assert len(document) < 8_000_000


def test_fields_hold_the_right_values(report: str, chelsea_result, lite0) -> None:
    parsed = parse(report)
    table = fields(parsed)
    target = chelsea_result.target
    assert table["Image"] == "chelsea.png"
    assert table["Model"] == f"{lite0.title} ({lite0.name})"
    assert table["Weights file"] == Path(lite0.weights_file).name
    assert table["Weights SHA-256"] == hashlib.sha256(Path(lite0.weights_file).read_bytes()).hexdigest()
    assert table["Target class"] == f"{target.label} (index {target.index})"
    assert float(table["Target probability"]) == pytest.approx(target.probability, abs=1e-4)
    assert float(table["Target score (logit)"]) == pytest.approx(chelsea_result.score, abs=1e-4)
    assert table["Method"] == chelsea_result.method == "gradcam"
    assert table["Layer"] == chelsea_result.layer == lite0.default_layer
    assert table["Alpha"] == "0.45"
    assert table["Colormap"] == "viridis"
    assert table["Timestamp (UTC)"] == "2024-05-06T07:08:09+00:00"
    assert datetime.fromisoformat(table["Timestamp (UTC)"]) == NOW
    # Extra rows.
    assert table["Modality"] == "CT" and table["Frames"] == "1"
    # Library versions.
    assert table["gradcam_core"] == gradcam_core.__version__  # read from the installed metadata (pyproject.toml)
    assert table["torch"] == torch.__version__
    assert table["torchvision"] == torchvision.__version__
    assert table["numpy"] == np.__version__
    assert table["Pillow"] == Image.__version__
    assert table["OpenCV"] == cv2.__version__
    assert table["Python"] == platform.python_version()
    # The disclaimer, verbatim.
    text = "".join(parsed.text)
    assert DISCLAIMER == "Research and teaching tool — not a diagnostic device; do not use for clinical decisions."
    assert DISCLAIMER in text


def test_predictions_table(report: str, chelsea_result) -> None:
    rows = [row for row in parse(report).rows if len(row) == 4 and row[0].isdigit()]
    assert len(rows) == len(chelsea_result.predictions) == 5
    for rank, (row, prediction) in enumerate(zip(rows, chelsea_result.predictions), start=1):
        assert row == [str(rank), prediction.label, str(prediction.index), f"{prediction.probability * 100:.2f}%"]
    assert 'class="target"' in report


def test_self_contained(report: str) -> None:
    assert "http://" not in report and "https://" not in report
    assert "<script" not in report.lower() and "<link" not in report.lower()
    assert "@import" not in report and "url(" not in report
    for img in parse(report).images:
        assert img["src"].startswith("data:image/png;base64,")
    assert "default-src 'none'" in report


def test_user_strings_are_escaped(chelsea_result, lite0) -> None:
    evil = "<script>alert(1)</script>.png"
    document = build_report(
        chelsea_result,
        model_title='<b onmouseover="x">Model</b>',
        weights_file=None,
        alpha=0.5,
        colormap="jet",
        image_name=evil,
        extra={"<i>key</i>": "\"'&<>"},
        now=NOW,
    )
    assert "<script" not in document.lower()
    assert "<b " not in document and "<i>" not in document
    assert html.escape(evil) in document
    parsed = parse(document)
    assert "script" not in parsed.tags and "b" not in parsed.tags and "i" not in parsed.tags
    table = fields(parsed)
    assert table["Image"] == evil  # shown as text, intact
    assert table["<i>key</i>"] == "\"'&<>"
    assert table["Weights file"] == "not available" and table["Weights SHA-256"] == "not available"
    assert parsed.title == f"Grad-CAM report — {evil}"


def test_timestamp_default_and_conversion(chelsea_result, lite0) -> None:
    def stamp(now):
        document = build_report(
            chelsea_result, model_title="m", weights_file=None, alpha=0.5, colormap="jet", image_name="x", now=now
        )
        return fields(parse(document))["Timestamp (UTC)"]

    paris = timezone(timedelta(hours=2))
    assert stamp(datetime(2024, 5, 6, 9, 8, 9, tzinfo=paris)) == "2024-05-06T07:08:09+00:00"
    assert stamp(datetime(2024, 5, 6, 7, 8, 9)) == "2024-05-06T07:08:09+00:00"  # naive: UTC
    before = datetime.now(timezone.utc).replace(microsecond=0)
    value = datetime.fromisoformat(stamp(None))
    assert value.utcoffset() == timedelta(0)
    assert before <= value <= datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp(None))


def test_bad_colormap_or_alpha(chelsea_result) -> None:
    with pytest.raises(ValueError):
        build_report(chelsea_result, model_title="m", weights_file=None, alpha=0.5, colormap="nope", image_name="x")
    with pytest.raises(ValueError):
        build_report(chelsea_result, model_title="m", weights_file=None, alpha=1.5, colormap="jet", image_name="x")


def test_weights_sha256_streams_and_caches(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    payload = np.random.default_rng(0).bytes(3 * 2**20 + 17)  # several chunks
    path.write_bytes(payload)
    assert weights_sha256(path) == hashlib.sha256(payload).hexdigest()
    assert weights_sha256(str(path)) == hashlib.sha256(payload).hexdigest()
    # A changed file (new size and mtime) is hashed again, not served from the cache.
    path.write_bytes(payload + b"x")
    assert weights_sha256(path) == hashlib.sha256(payload + b"x").hexdigest()
    with pytest.raises(OSError):
        weights_sha256(tmp_path / "missing.bin")


def test_unreadable_weights_recorded_not_raised(chelsea_result, tmp_path: Path) -> None:
    document = build_report(
        chelsea_result,
        model_title="m",
        weights_file=tmp_path / "gone.pth",
        alpha=0.5,
        colormap="jet",
        image_name="x",
        now=NOW,
    )
    table = fields(parse(document))
    assert table["Weights file"] == "gone.pth"
    assert table["Weights SHA-256"].startswith("not available")


def test_library_versions_keys() -> None:
    versions = library_versions()
    for key in ("gradcam_core", "Python", "torch", "torchvision", "numpy", "Pillow", "OpenCV"):
        assert versions[key]
