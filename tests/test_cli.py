"""The command line: outputs, summary.json, error handling and exit codes, with the real built-in model."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from gradcam_core import (
    MODELS,
    LoadedModel,
    available_models,
    explain,
    explain_guided,
    gradient_to_rgb,
    load_model,
    overlay,
)
from gradcam_core import cli
from gradcam_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
CHELSEA = ASSETS / "chelsea.png"  # 451 x 300
COFFEE = ASSETS / "coffee.png"  # 600 x 400
OUTPUTS = ("_overlay.png", "_heatmap.png", "_heatmap.npy")


class Run(NamedTuple):
    code: int
    out: str
    err: str
    dir: Path


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """chelsea + coffee with the default settings, run once for the module."""
    out_dir = tmp_path_factory.mktemp("batch") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(CHELSEA), str(COFFEE), "--out", str(out_dir)])
    return Run(code, stdout.getvalue(), stderr.getvalue(), out_dir)


def _summary(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_batch_writes_every_output(batch: Run) -> None:
    assert batch.code == 0
    assert batch.err == ""  # no progress bar: fewer than 5 images and stderr is not a terminal
    for stem, (width, height) in (("chelsea", (451, 300)), ("coffee", (600, 400))):
        for suffix in OUTPUTS:
            assert (batch.dir / f"{stem}{suffix}").is_file()
        for suffix in ("_overlay.png", "_heatmap.png"):
            with Image.open(batch.dir / f"{stem}{suffix}") as png:
                assert (png.format, png.mode, png.size) == ("PNG", "RGB", (width, height))
        heatmap = np.load(batch.dir / f"{stem}_heatmap.npy")
        assert heatmap.dtype == np.float32
        assert heatmap.shape == (height, width)


@pytest.mark.parametrize("image", [CHELSEA, COFFEE], ids=["chelsea", "coffee"])
def test_npy_is_the_explanation_heatmap(batch: Run, model: LoadedModel, image: Path) -> None:
    expected = explain(image, model).heatmap
    assert np.array_equal(np.load(batch.dir / f"{image.stem}_heatmap.npy"), expected)


def test_overlay_png_is_the_rendered_overlay(batch: Run, model: LoadedModel) -> None:
    result = explain(CHELSEA, model)
    with Image.open(batch.dir / "chelsea_overlay.png") as png:
        assert np.array_equal(np.asarray(png), overlay(result.image, result.heatmap, 0.5, "jet"))


def test_summary_fields(batch: Run, model: LoadedModel) -> None:
    summary = _summary(batch.dir)
    assert {k: summary[k] for k in ("model", "layer", "method", "colormap", "alpha")} == {
        "model": "efficientnet_lite0",
        "layer": "_bn1",
        "method": "gradcam",
        "colormap": "jet",
        "alpha": 0.5,
    }
    assert summary["failed"] == []
    chelsea, coffee = summary["images"]
    assert (chelsea["file"], coffee["file"]) == (str(CHELSEA), str(COFFEE))
    for entry in (chelsea, coffee):
        predictions = entry["predictions"]
        assert len(predictions) == 5
        assert [set(p) for p in predictions] == [{"index", "label", "probability"}] * 5
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert entry["target"] == predictions[0]  # default target: the top-1 class
        assert isinstance(entry["score"], float)
        assert min(entry["input_size"]) == 224  # the model's input size (the whole image, resized)
        assert entry["strength"] > 0
    top_cat = chelsea["predictions"][0]["label"].lower()
    assert "cat" in top_cat or top_cat == "tabby"
    assert coffee["predictions"][0]["label"] == "espresso"
    assert chelsea["input_size"] == list(explain(CHELSEA, model).input_size)
    assert chelsea["outputs"] == {
        "overlay": "chelsea_overlay.png",
        "heatmap": "chelsea_heatmap.png",
        "heatmap_npy": "chelsea_heatmap.npy",
    }


def test_target_by_name(tmp_path: Path, model: LoadedModel, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CHELSEA), "--target", "espresso", "--out", str(tmp_path)]) == 0
    entry = _summary(tmp_path)["images"][0]
    assert (entry["target"]["index"], entry["target"]["label"]) == (967, "espresso")
    expected = explain(CHELSEA, model, target="espresso").heatmap
    assert np.array_equal(np.load(tmp_path / "chelsea_heatmap.npy"), expected)


def test_guided_writes_guided_gradcam(tmp_path: Path, model: LoadedModel) -> None:
    assert main([str(CHELSEA), "--guided", "--target", "tabby", "--out", str(tmp_path)]) == 0
    outputs = _summary(tmp_path)["images"][0]["outputs"]
    assert outputs["guided_gradcam"] == "chelsea_guided_gradcam.png"
    assert all((tmp_path / name).is_file() for name in outputs.values())
    expected = gradient_to_rgb(explain_guided(CHELSEA, model, target="tabby").guided_gradcam)
    with Image.open(tmp_path / "chelsea_guided_gradcam.png") as png:
        assert (png.mode, png.size) == ("RGB", (451, 300))
        assert np.array_equal(np.asarray(png), expected)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),  # truncated PNG
        ("notes.png", b"these are not pixels\n"),  # not an image at all
        ("missing.png", None),  # does not exist
    ],
    ids=["corrupt", "not-an-image", "missing"],
)
def test_bad_file_among_good_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None
) -> None:
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    out_dir = tmp_path / "out"
    code = main([str(CHELSEA), str(bad), str(COFFEE), "--out", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {bad}: ")
    for stem in ("chelsea", "coffee"):
        for suffix in OUTPUTS:
            assert (out_dir / f"{stem}{suffix}").is_file()
    assert not list(out_dir.glob(f"{bad.stem}_*"))
    summary = _summary(out_dir)
    assert [entry["file"] for entry in summary["images"]] == [str(CHELSEA), str(COFFEE)]
    assert summary["failed"] == [{"file": str(bad), "error": lines[0].removeprefix(f"error: {bad}: ")}]


def test_same_stem_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    shutil.copy(CHELSEA, first)
    shutil.copy(COFFEE, second)
    out_dir = tmp_path / "out"
    assert main([str(first), str(second), "--out", str(out_dir)]) == 0
    assert np.load(out_dir / "x_heatmap.npy").shape == (300, 451)
    assert np.load(out_dir / "x_2_heatmap.npy").shape == (400, 600)
    outputs = [entry["outputs"]["overlay"] for entry in _summary(out_dir)["images"]]
    assert outputs == ["x_overlay.png", "x_2_overlay.png"]


def _unavailable_model() -> str | None:
    return next((status.name for status in available_models() if not status.available), None)


@pytest.mark.parametrize(
    "options",
    [
        ["--model", "no_such_model"],
        ["--model", "unavailable"],
        ["--layer", "no.such.layer"],
        ["--layer", "_fc"],  # exists, but is not a feature map
        ["--target", "no such class"],
        ["--target", "5000"],
    ],
    ids=lambda options: " ".join(options),
)
def test_bad_setting_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]) -> None:
    if options == ["--model", "unavailable"]:
        name = _unavailable_model()
        if name is None:
            pytest.skip("every registered model is available on this machine")
        options = ["--model", name]
    out_dir = tmp_path / "out"
    assert main([str(CHELSEA), *options, "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (out_dir / "summary.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [str(CHELSEA)],  # --out missing
        ["--out", "somewhere"],  # no image
        [str(CHELSEA), "--out", "o", "--alpha", "1.5"],
        [str(CHELSEA), "--out", "o", "--alpha", "nan"],
        [str(CHELSEA), "--out", "o", "--colormap", "rainbow"],
        [str(CHELSEA), "--out", "o", "--method", "nosuchcam"],
    ],
    ids=["no-out", "no-image", "alpha-high", "alpha-nan", "colormap", "method"],
)
def test_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_list_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MODELS)
    for status, line in zip(available_models(), lines):
        assert line.split()[1] == ("available" if status.available else "unavailable")
        if not status.available:
            assert status.reason in line
    assert lines[0].split()[:2] == ["efficientnet_lite0", "available"]


def test_list_layers(model: LoadedModel, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-layers", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    for info in model.layers:
        assert info.describe() in out
    marked = [line for line in out.splitlines() if line.startswith("*")]
    assert len(marked) == 1
    assert "_bn1" in marked[0] and "default" in marked[0]


def test_list_layers_of_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-layers", "no_such_model"]) == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1


def test_progress_bar_and_model_loaded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loads: list[str | None] = []

    def counting_load_model(name: str | None = None) -> LoadedModel:
        loads.append(name)
        return load_model(name)

    monkeypatch.setattr(cli, "load_model", counting_load_model)
    images = []
    for i in range(5):
        images.append(tmp_path / f"img{i}.png")
        shutil.copy(CHELSEA, images[-1])
    out_dir = tmp_path / "out"
    assert main([*map(str, images), "--progress", "--out", str(out_dir)]) == 0
    err = capsys.readouterr().err
    assert "5/5" in err and "Traceback" not in err
    assert len(_summary(out_dir)["images"]) == 5
    assert loads == ["efficientnet_lite0"]


def test_python_dash_m(tmp_path: Path, model: LoadedModel) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    out_dir = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "gradcam_core", str(COFFEE), str(bad), "--out", str(out_dir)]
    command += ["--method", "counterfactual", "--alpha", "0.3", "--colormap", "viridis"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")
    summary = _summary(out_dir)
    assert (summary["method"], summary["alpha"], summary["colormap"]) == ("counterfactual", 0.3, "viridis")
    expected = explain(COFFEE, model, method="counterfactual").heatmap
    assert np.allclose(np.load(out_dir / "coffee_heatmap.npy"), expected, atol=1e-6)


def test_folder_run_writes_a_csv_row_per_image(
    tmp_path: Path, model: LoadedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydicom.data import get_testdata_file

    from gradcam_core import read_dicom, render_frame
    from gradcam_core.tables import COLUMNS

    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(COFFEE, folder / "b_coffee.png")
    shutil.copy(CHELSEA, folder / "a_cat.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "c_scan.dcm")
    (folder / "notes.txt").write_text("not an image")
    (folder / "nested").mkdir()
    shutil.copy(CHELSEA, folder / "nested" / "ignored.png")
    out_dir = tmp_path / "out"
    assert main([str(folder), "--out", str(out_dir)]) == 0
    assert "3 of 3 images explained" in capsys.readouterr().out
    rows = list(csv.DictReader((out_dir / "summary.csv").open(encoding="utf-8")))
    assert tuple(rows[0]) == COLUMNS
    assert [Path(row["image"]).name for row in rows] == ["a_cat.png", "b_coffee.png", "c_scan.dcm"]
    expected = [explain(CHELSEA, model), explain(COFFEE, model),
                explain(render_frame(read_dicom(get_testdata_file("CT_small.dcm"))), model)]
    for row, found in zip(rows, expected):
        assert row["top_class"] == found.predictions[0].label
        assert float(row["top_probability"]) == pytest.approx(found.predictions[0].probability, abs=1e-6)
        assert float(row["peak_evidence"]) == pytest.approx(found.strength, rel=1e-5)
        assert (row["model"], row["layer"], row["method"]) == (model.name, model.default_layer, "gradcam")
    summary = _summary(out_dir)
    assert [image["strength"] for image in summary["images"]] == pytest.approx([f.strength for f in expected])


def test_empty_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert "holds no image files" in line
