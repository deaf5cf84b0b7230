"""Bring your own model: a torchvision architecture + weights file + labels, loaded safely, explained like any other."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from gradcam_core import ModelError, explain, load_custom_model, to_input
from gradcam_core.architectures import matching_architectures
from gradcam_core.cli import main
from gradcam_core.units import format_size

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CHELSEA = ASSETS / "chelsea.png"
LABELS = ["cat", "dog", "bird"]
SIZE = 64  # a small input keeps the probe and the explanations fast


def _resnet18(in_channels: int = 3) -> nn.Module:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong load would show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    return _resnet18()


@pytest.fixture(scope="module")
def files(reference: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference model's weights saved in every accepted format, plus labels files."""
    folder = tmp_path_factory.mktemp("custom")
    state = reference.state_dict()
    paths = {
        "safetensors": folder / "model.safetensors",
        "pt": folder / "model.pt",
        "legacy": folder / "legacy.pth",
        "wrapped": folder / "checkpoint.pth",
        "dataparallel": folder / "dataparallel.pt",
        "misnamed": folder / "safetensors_really.pt",
    }
    save_file(state, paths["safetensors"])
    torch.save(state, paths["pt"])
    torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)
    torch.save({"state_dict": state, "epoch": 7, "best_accuracy": 0.9}, paths["wrapped"])
    torch.save({f"module.{key}": value for key, value in state.items()}, paths["dataparallel"])
    paths["misnamed"].write_bytes(paths["safetensors"].read_bytes())
    paths["labels_txt"] = folder / "labels.txt"
    paths["labels_txt"].write_text("cat\n\ndog\n  bird  \n\n", encoding="utf-8")
    paths["labels_json"] = folder / "labels.json"
    paths["labels_json"].write_text(json.dumps({"0": "cat", "1": "dog", "2": "bird"}), encoding="utf-8")
    return paths


def _model_error(*args, **kwargs) -> str:
    """The message of the ModelError raised by load_custom_model; it must be one sentence on one line."""
    with pytest.raises(ModelError) as info:
        load_custom_model(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and not re.search(r"[.?!]\s+[A-Z]", message), message
    return message


def _assert_same_weights(loaded: nn.Module, reference: nn.Module) -> None:
    expected = reference.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize("kind", ["safetensors", "pt", "legacy", "wrapped", "dataparallel", "misnamed"])
def test_every_format_loads_the_same_weights_and_explains(kind, files, reference) -> None:
    loaded = load_custom_model("resnet18", files[kind], files["labels_txt"], input_size=SIZE)
    _assert_same_weights(loaded.model, reference)
    assert not loaded.model.training
    assert loaded.categories == tuple(LABELS)
    assert loaded.default_layer == "layer4" and loaded.activation == "softmax"
    assert loaded.weights_file == files[kind] and loaded.name == files[kind].stem
    assert loaded.weights_sha256 == hashlib.sha256(files[kind].read_bytes()).hexdigest()
    result = explain(CHELSEA, model=loaded, target="Bird")
    assert result.target.label == "bird" and result.target.index == 2
    assert result.heatmap.shape == (300, 451) and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    with torch.no_grad():
        logits = reference(to_input(result.image, loaded.preprocessing))[0]
    assert torch.allclose(torch.tensor([p.probability for p in result.predictions]).sum(), torch.tensor(1.0))
    assert result.target.probability == pytest.approx(float(logits.softmax(0)[2]), abs=1e-5)


def test_bytes_and_label_lists_and_json(files, reference) -> None:
    loaded = load_custom_model(
        "ResNet18", files["safetensors"].read_bytes(), files["labels_json"].read_bytes(), input_size=SIZE
    )
    _assert_same_weights(loaded.model, reference)
    assert loaded.categories == tuple(LABELS) and loaded.name == "resnet18" and loaded.weights_file is None
    for labels in (LABELS, json.dumps(LABELS).encode(), json.dumps({"cat": 0, "dog": 1, "bird": 2}).encode()):
        assert load_custom_model("resnet18", files["pt"], labels, input_size=SIZE).categories == tuple(LABELS)


def test_labels_must_match_the_head(files) -> None:
    message = _model_error("resnet18", files["pt"], ["a", "b", "c", "d", "e"])
    assert message == "The labels list has 5 names but the model has 3 outputs."
    wrong = files["labels_txt"].with_name("five.txt")
    wrong.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
    assert _model_error("resnet18", files["pt"], wrong) == "The labels file has 5 names but the model has 3 outputs."
    assert "twice" in _model_error("resnet18", files["pt"], ["cat", "Cat", "dog"])
    assert "not valid" in _model_error("resnet18", files["pt"], b'["cat", "dog",')
    assert "index" in _model_error("resnet18", files["pt"], b'{"0": "cat", "1": "dog", "5": "bird"}')
    assert "does not exist" in _model_error("resnet18", files["pt"], files["pt"].with_name("nope.txt"))


def test_wrong_architecture_names_missing_keys(files) -> None:
    message = _model_error("resnet34", files["safetensors"], LABELS)
    assert message.startswith("The weights do not fit resnet34: 80 keys of resnet34 missing (such as 'layer1.2.")
    assert "no classifier tensor 'classifier.6.weight'" in _model_error("vgg16", files["pt"], LABELS)


def test_unexpected_keys_and_wrong_shapes(reference) -> None:
    state = dict(reference.state_dict())
    state["extra.weight"] = torch.zeros(2)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    message = _model_error("resnet18", save_bytes(state), LABELS)
    assert "1 unexpected key (such as 'extra.weight')" in message
    assert "1 tensor of the wrong shape (such as 'layer1.0.conv1.weight': 64×64×5×5, not 64×64×3×3)" in message


def save_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_architecture_recognised_from_the_weights(files, reference) -> None:
    loaded = load_custom_model(None, files["dataparallel"], LABELS, input_size=SIZE)
    _assert_same_weights(loaded.model, reference)
    assert loaded.title == "resnet18 (dataparallel.pt)"
    for arch in ("resnet50", "densenet121", "vit_b_16", "inception_v3"):  # other heads; Inception without aux
        extra = {"aux_logits": False, "init_weights": False} if arch == "inception_v3" else {}
        with torch.device("meta"):
            state = torchvision.models.get_model(arch, weights=None, num_classes=7, **extra).state_dict()
        assert matching_architectures(state) == [arch]
    grey = _resnet18(in_channels=1).state_dict()
    assert matching_architectures(grey) == ["resnet18"]
    state = dict(reference.state_dict())
    state["extra.weight"] = torch.zeros(2)
    message = _model_error(None, save_bytes(state), LABELS)
    assert message.startswith("These weights (123 tensors, first 'conv1.weight') fit none of torchvision's")


def test_unknown_architecture(files) -> None:
    message = _model_error("resnet9", files["pt"], LABELS)
    assert message.startswith("Unknown architecture 'resnet9' (did you mean") and "list_models()" in message
    assert "Unknown architecture" in _model_error("efficientnet_lite0", files["pt"], LABELS)  # not torchvision's


def test_damaged_and_foreign_files(files, tmp_path: Path) -> None:
    for data in (files["pt"].read_bytes()[:4000], files["legacy"].read_bytes()[:4000]):
        assert "damaged or truncated PyTorch checkpoint" in _model_error("resnet18", data, LABELS)
    message = _model_error("resnet18", files["safetensors"].read_bytes()[:4000], LABELS)
    assert message == "The weights file starts like safetensors but is damaged or truncated."
    assert "neither safetensors nor" in _model_error("resnet18", b"GIF89a not weights", LABELS)
    assert _model_error("resnet18", b"", LABELS) == "The weights file is empty."
    assert "no state dict" in _model_error("resnet18", save_bytes({}), LABELS)
    assert "not a tensor" in _model_error("resnet18", save_bytes({"fc.weight": [1, 2]}), LABELS)
    assert "does not exist" in _model_error("resnet18", tmp_path / "missing.safetensors", LABELS)


def test_checkpoint_declaring_a_huge_tensor_is_one_sentence() -> None:
    """A 376-byte legacy checkpoint whose storage claims 5 G floats (20 GB): refused, nothing allocated."""
    import resource

    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    data = bytearray(buffer.getvalue())
    count = data.rfind((4).to_bytes(8, "little"))  # the storage's element count, just before its 16 bytes
    assert count == len(data) - 24
    data[count : count + 8] = (5 * 2**30).to_bytes(8, "little")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert "damaged or truncated" in _model_error("resnet18", bytes(data), LABELS)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: under 512 MB


def test_too_large_file_is_refused_before_reading(files) -> None:
    size = files["pt"].stat().st_size
    message = _model_error("resnet18", files["pt"], LABELS, max_bytes=1000)
    assert message == f"The weights file '{files['pt']}' is {format_size(size)}, more than the 1000 bytes limit."
    assert "more than the" in _model_error("resnet18", files["pt"].read_bytes(), LABELS, max_bytes=1000)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(8 * 1024**2))
    assert len(bomb.getvalue()) < 1024**2
    message = _model_error("resnet18", bomb.getvalue(), LABELS, max_bytes=1024**2)
    assert message == "The weights file unpacks to 8 MB, over the 1 MB limit."


def test_torchscript_is_refused(reference, tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(reference).save(str(path))
    message = _model_error("resnet18", path, LABELS)
    assert message.startswith("The weights file is a TorchScript program, which is never run here")


def test_whole_pickled_module_is_refused(reference) -> None:
    message = _model_error("resnet18", save_bytes(reference), LABELS)  # torch.save(model), not its state_dict
    assert message.startswith("The weights file holds Python objects besides tensors")


class _Payload:
    """Unpickling this creates the marker file (open(path, "w")) or runs a shell command."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["open", "system"])
@pytest.mark.parametrize("container", ["zip", "legacy", "raw_pickle"])
def test_malicious_pickle_is_refused_without_running(how: str, container: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"fc.weight": _Payload(marker, how)}
    path = tmp_path / "evil.pt"
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container == "zip")
    message = _model_error("resnet18", path, LABELS)
    assert message.startswith("The weights file holds Python objects besides tensors")
    assert not marker.exists()


def test_multilabel_sigmoid(files, reference) -> None:
    loaded = load_custom_model("resnet18", files["safetensors"], LABELS, activation="sigmoid", input_size=SIZE)
    assert loaded.activation == "sigmoid"
    result = explain(CHELSEA, model=loaded)
    with torch.no_grad():
        logits = reference(to_input(result.image, loaded.preprocessing))[0]
    expected = torch.sigmoid(logits)
    probabilities = [p.probability for p in result.predictions]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and abs(sum(probabilities) - 1.0) > 1e-3
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 3
    for prediction in result.predictions:
        assert prediction.probability == pytest.approx(float(expected[prediction.index]), abs=1e-5)
    for index, label in enumerate(LABELS):  # any label can be explained
        explained = explain(CHELSEA, model=loaded, target=label)
        assert explained.target.index == index
        assert explained.target.probability == pytest.approx(float(expected[index]), abs=1e-5)
    assert "Unknown activation" in _model_error("resnet18", files["pt"], LABELS, activation="relu")


def test_grayscale_model_with_one_input_channel(tmp_path: Path) -> None:
    reference = _resnet18(in_channels=1)
    path = tmp_path / "gray.safetensors"
    save_file(reference.state_dict(), path)
    loaded = load_custom_model("resnet18", path, LABELS, grayscale=True, input_size=SIZE, mean=(0.5,), std=(0.25,))
    _assert_same_weights(loaded.model, reference)
    assert loaded.preprocessing.channels == 1 and loaded.preprocessing.grayscale
    assert loaded.preprocessing.mean == (0.5,) and loaded.preprocessing.std == (0.25,)
    result = explain(CHELSEA, model=loaded, target="dog")  # an RGB image
    assert result.image.mode == "RGB" and result.target.label == "dog" and result.heatmap.shape == (300, 451)
    inputs = to_input(result.image, loaded.preprocessing)
    assert inputs.shape == (1, 1, 64, 96)
    with torch.no_grad():
        logits = reference(inputs)[0]
    assert result.target.probability == pytest.approx(float(logits.softmax(0)[1]), abs=1e-5)
    # the default ImageNet statistics are averaged for one channel; 1-channel weights imply grayscale
    defaults = load_custom_model("resnet18", path, LABELS, input_size=SIZE)
    assert defaults.preprocessing.grayscale and defaults.preprocessing.mean == pytest.approx((0.449,), abs=1e-3)


def test_grayscale_for_an_rgb_model_repeats_the_luminance(files) -> None:
    loaded = load_custom_model("resnet18", files["pt"], LABELS, grayscale=True, input_size=SIZE, mean=[0.5], std=[0.5])
    inputs = to_input(explain(CHELSEA, model=loaded).image, loaded.preprocessing)
    assert inputs.shape[1] == 3
    assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 1], inputs[:, 2])


def test_preprocessing_options_are_checked(files) -> None:
    assert "input size" in _model_error("resnet18", files["pt"], LABELS, input_size=8)
    assert "has 2 values" in _model_error("resnet18", files["pt"], LABELS, mean=(0.5, 0.5))
    assert "positive" in _model_error("resnet18", files["pt"], LABELS, std=(0.0,))


def _cli(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, stdout.getvalue(), stderr.getvalue()


def test_cli_with_a_custom_model(files, tmp_path: Path) -> None:
    labels = str(files["labels_json"])
    custom = ["--weights", str(files["wrapped"]), "--architecture", "resnet18", "--labels", labels]
    out = tmp_path / "out"
    code, _, err = _cli([str(CHELSEA), "--out", str(out), *custom, "--activation", "sigmoid", "--input-size", "64",
                         "--mean", "0.5,0.5,0.5", "--std", "0.5", "--grayscale", "--target", "dog"])
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["model"] == "checkpoint" and summary["activation"] == "sigmoid" and summary["layer"] == "layer4"
    (entry,) = summary["images"]
    assert entry["target"]["label"] == "dog" and (out / entry["outputs"]["overlay"]).is_file()
    assert entry["input_size"] == [64, 96]

    latin1 = tmp_path / "labels.txt"
    latin1.write_bytes("caf\xe9\nchien\noiseau\n".encode("latin-1"))
    code, _, err = _cli([str(CHELSEA), "--out", str(out), *custom[:4], "--labels", str(latin1)])
    assert code == 2 and err.startswith("error: The labels file is not UTF-8 text.") and err.count("\n") == 1
    code, _, err = _cli([str(CHELSEA), "--out", str(out), *custom, "--model", "resnet50"])
    assert code == 2 and "mutually exclusive" in err
    code, _, err = _cli([str(CHELSEA), "--out", str(out), "--architecture", "resnet18"])
    assert code == 2 and "give --weights too" in err
    code, _, err = _cli([str(CHELSEA), "--out", str(tmp_path / "recognised"), *custom[:2], *custom[4:]])
    assert code == 0, err  # no --architecture: recognised from the weights


def test_own_model_gets_an_activated_layer_for_methods_with_nonnegative_weights() -> None:
    """The rule that picks Score-CAM's layer runs for uploaded models too (it was left unset for them)."""
    import safetensors.torch

    torch.manual_seed(0)
    weights = safetensors.torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict())
    model = load_custom_model("resnet18", weights, ["a", "b"], input_size=64)
    assert model.activated_layer == "layer4" == model.default_layer  # BasicBlocks end with their ReLU
    assert model.default_layer_for("scorecam") == "layer4"
