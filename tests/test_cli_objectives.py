"""The command line's targets beyond one class (--classes, --negative, --region, segmentation masks), end to end
on tiny seeded models: each map equals the engine's map for the same objective, exactly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from PIL import Image

from gradcam_core import BinaryLogit, ModelRequest, RegionScore, WeightedClasses, explain, load_image, load_user_model
from gradcam_core.cli import main
from gradcam_core.masks import class_colour, mask_picture, region_from_picture
from gradcam_core.preprocess import to_input
from tests.segmentation_models import CLASSES, unet_bundle

ROOT = Path(__file__).resolve().parents[1]
CHELSEA = ROOT / "assets" / "chelsea.png"  # 451 x 300: a 64 x 96 input at size 64
FINDINGS = ("effusion", "nodule", "normal")


def _run(*argv: object) -> tuple[int, str]:
    """Exit status and stderr of ``gradcam argv``."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, err.getvalue()


def _mobilenet(tmp: Path, labels: tuple[str, ...]) -> tuple[list[str], ModelRequest]:
    """A seeded shufflenet_v2_x0_5 (345 k parameters) with ``len(labels)`` outputs: its CLI options and the same
    model's request. Its batch norms are set to one random batch's statistics, so the logits are about 1 (with
    the initial statistics the features fade to nothing and the logits are the biases)."""
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=len(labels))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: one batch gives its statistics
    with torch.no_grad():
        net.train()(torch.randn(8, 3, 64, 64))
    net.eval()
    weights, names = tmp / "net.safetensors", tmp / "labels.txt"
    weights.write_bytes(safetensors.torch.save(net.state_dict()))
    names.write_text("\n".join(labels), encoding="utf-8")
    options = ["--weights", weights, "--labels", names, "--architecture", "shufflenet_v2_x0_5", "--input-size", "64"]
    return options, ModelRequest(weights=weights, labels=names, architecture="shufflenet_v2_x0_5", input_size=64)


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> tuple[list[str], ModelRequest]:
    return _mobilenet(tmp_path_factory.mktemp("findings"), FINDINGS)


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> tuple[list[str], ModelRequest]:
    return _mobilenet(tmp_path_factory.mktemp("binary"), ("pneumonia",))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> tuple[list[str], ModelRequest]:
    tmp = tmp_path_factory.mktemp("unet")
    (tmp / "unet.zip").write_bytes(unet_bundle())
    (tmp / "labels.txt").write_text("\n".join(CLASSES), encoding="utf-8")
    options = ["--source", "monai", "--weights", tmp / "unet.zip", "--labels", tmp / "labels.txt", "--input-size", "64"]
    return options, ModelRequest(weights=tmp / "unet.zip", labels=tmp / "labels.txt", input_size=64)


def _outputs(out: Path) -> tuple[dict, np.ndarray]:
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary, np.load(out / "chelsea_heatmap.npy")


# ------------------------------------------------------------------------------------------------ classifiers


def test_weighted_classes_give_the_engines_map(findings, tmp_path: Path) -> None:
    options, request = findings
    code, err = _run(CHELSEA, "--out", tmp_path, *options, "--classes", "effusion=1, nodule=0.5")
    assert (code, err) == (0, "")
    summary, heatmap = _outputs(tmp_path)
    loaded = load_user_model("torchvision", request)
    engine = explain(CHELSEA, loaded, target=WeightedClasses({0: 1.0, 1: 0.5}))
    assert np.array_equal(heatmap, engine.heatmap) and engine.strength > 0
    assert summary["objective"] == {"type": "weighted classes", "weights": [
        {"index": 0, "label": "effusion", "weight": 1.0}, {"index": 1, "label": "nodule", "weight": 0.5}]}
    image = summary["images"][0]
    assert image["target"]["label"] == "effusion + 0.5 × nodule"
    with torch.no_grad():
        logits = loaded.model(to_input(load_image(CHELSEA), loaded.preprocessing))[0]
    assert image["score"] == pytest.approx(float(logits[0] + 0.5 * logits[1]), rel=1e-5)
    print("weighted score", image["score"], "peak", engine.strength)

    # The same objective by index, repeated flags: the same map.
    code, _ = _run(CHELSEA, "--out", tmp_path / "again", *options, "--classes", "0=1", "--classes", "NODULE=0.5")
    assert code == 0 and np.array_equal(np.load(tmp_path / "again" / "chelsea_heatmap.npy"), heatmap)


def test_negative_evidence_of_a_binary_model_is_the_engines_and_the_counterfactual(binary, tmp_path: Path) -> None:
    options, request = binary
    code, err = _run(CHELSEA, "--out", tmp_path, *options, "--negative")
    assert (code, err) == (0, "")
    summary, heatmap = _outputs(tmp_path)
    loaded = load_user_model("torchvision", request)
    negative = explain(CHELSEA, loaded, target=BinaryLogit(False))
    assert np.array_equal(heatmap, negative.heatmap)
    counterfactual = explain(CHELSEA, loaded, method="counterfactual")  # the default objective is the positive logit
    np.testing.assert_allclose(negative.raw_map, counterfactual.raw_map, rtol=1e-6, atol=1e-7)
    positive = explain(CHELSEA, loaded)
    assert summary["objective"] == {"type": "binary logit", "evidence": "negative"}
    target = summary["images"][0]["target"]
    assert target["label"] == "not pneumonia" and summary["images"][0]["score"] == pytest.approx(-positive.score)
    assert target["probability"] == pytest.approx(1 - positive.target.probability, abs=1e-6)
    assert not np.array_equal(heatmap, positive.heatmap)
    print("logit", positive.score, "p(not pneumonia)", target["probability"])


# ------------------------------------------------------------------------------------------------ segmentation


def test_a_segmentation_gets_its_predicted_region_and_a_mask_picture(segmenter, tmp_path: Path) -> None:
    options, request = segmenter
    code, err = _run(CHELSEA, "--out", tmp_path, *options, "--target", "organ")
    assert (code, err) == (0, "")
    summary, heatmap = _outputs(tmp_path)
    engine = explain(CHELSEA, load_user_model("monai", request), target=1)
    assert np.array_equal(heatmap, engine.heatmap)
    assert np.array_equal(engine.region, engine.segmentation == 1) and engine.region.shape == (64, 96)
    assert summary["objective"] == {"type": "predicted region", "class": {"index": 1, "label": "organ"}}
    assert summary["mask_colours"] == {"background": "#000000", "organ": "#e69f00", "tumour": "#56b4e9"}
    image = summary["images"][0]
    assert image["outputs"]["mask"] == "chelsea_mask.png" and image["target"]["label"] == "organ (region)"
    with Image.open(tmp_path / "chelsea_mask.png") as png:
        mask = np.asarray(png.convert("RGB"))
    assert mask.shape == (300, 451, 3)
    assert np.array_equal(mask, mask_picture(engine.segmentation, engine.region, (300, 451)))
    # Away from the outline every pixel has its class's colour; the outline is white.
    colours = {tuple(class_colour(c)) for c in range(3)} | {(255, 255, 255)}
    assert {tuple(p) for p in mask.reshape(-1, 3)} <= colours and (mask == 255).all(axis=2).any()

    # No --target: the top class's predicted region, as the engine's default.
    code, _ = _run(CHELSEA, "--out", tmp_path / "top", *options)
    top = explain(CHELSEA, load_user_model("monai", request))
    assert code == 0 and np.array_equal(np.load(tmp_path / "top" / "chelsea_heatmap.npy"), top.heatmap)
    assert json.loads((tmp_path / "top" / "summary.json").read_text())["images"][0]["target"]["index"] == 2
    print("region pixels", int(engine.region.sum()), "of", engine.region.size, "peak", engine.strength)


def test_a_region_from_a_mask_image(segmenter, tmp_path: Path) -> None:
    options, request = segmenter
    drawn = np.zeros((30, 45), np.uint8)  # a tenth of the picture's size: resized to the 64 x 96 input
    drawn[6:18, 10:30] = 255
    Image.fromarray(drawn).save(tmp_path / "box.png")
    code, err = _run(CHELSEA, "--out", tmp_path / "out", *options, "--region", tmp_path / "box.png", "--target", "2")
    assert (code, err) == (0, "")
    summary, heatmap = _outputs(tmp_path / "out")
    region = region_from_picture(load_image(tmp_path / "box.png"), (64, 96))
    assert region.shape == (64, 96) and int(region.sum()) == 26 * 42  # rows 13-38, columns 22-63
    loaded = load_user_model("monai", request)
    engine = explain(CHELSEA, loaded, target=RegionScore(2, region), keep_trace=True)
    assert np.array_equal(heatmap, engine.heatmap) and np.array_equal(engine.region, region.numpy())
    assert summary["images"][0]["score"] == pytest.approx(float(engine.trace.logits[0, 2][region].sum()), rel=1e-5)
    assert summary["objective"] == {
        "type": "region", "class": {"index": 2, "label": "tumour"}, "mask": str(tmp_path / "box.png")}
    predicted = explain(CHELSEA, loaded, target=2)
    assert not np.array_equal(heatmap, predicted.heatmap)  # the drawn region, not the predicted one

    # No --target: the top class over the drawn region.
    code, _ = _run(CHELSEA, "--out", tmp_path / "top", *options, "--region", tmp_path / "box.png")
    assert code == 0 and np.array_equal(np.load(tmp_path / "top" / "chelsea_heatmap.npy"), heatmap)
    print("region cells", int(region.sum()), "score", summary["images"][0]["score"])


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("model", "flags", "message"),
    [
        ("findings", ["--classes", "effusion=1", "--target", "nodule"],
         "gradcam: error: --target and --classes ask for different targets: give one"),
        ("findings", ["--negative", "--classes", "effusion=1"],
         "gradcam: error: --classes and --negative ask for different targets: give one"),
        ("findings", ["--classes", "effusion=heavy"],
         "gradcam: error: argument --classes: the weight of 'effusion' is not a number: 'heavy'"),
        ("findings", ["--classes", "effusion"],
         "gradcam: error: argument --classes: 'effusion' is not NAME=WEIGHT pairs separated by commas"),
        ("findings", ["--classes", "effusion=1,fracture=1"], "error: No class is named 'fracture'."),
        ("findings", ["--classes", "effusion=1,0=2"],
         "error: --classes names 'effusion' twice; give each class once."),
        ("findings", ["--negative"],
         "error: --negative is for a model with a single output (a binary logit); shufflenet_v2_x0_5 (net.safetensors) "
         "has 3 classes: use --target CLASS."),
        ("findings", ["--region", "mask.png"],
         "error: --region is for a segmentation model; shufflenet_v2_x0_5 (net.safetensors) classifies whole images."),
        ("segmenter", ["--classes", "organ=1"],
         "error: --classes is for a classifier; a segmentation model explains one class: use --target."),
        ("segmenter", ["--region", "missing.png"], "error: "),
    ],
)
def test_incompatible_targets_give_one_sentence_and_exit_2(model, flags, message, request, tmp_path: Path) -> None:
    options, _ = request.getfixturevalue(model)
    code, err = _run(CHELSEA, "--out", tmp_path / "out", *options, *flags)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(message), err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_audit_refuses_the_other_targets(tmp_path: Path) -> None:
    code, err = _run("audit", tmp_path, "--out", tmp_path / "audit", "--negative")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        "gradcam: error: gradcam audit explains one class per image: --classes, --negative and --region are not taken")
