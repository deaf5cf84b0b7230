"""The ONNX source: a graph exported from PyTorch comes back as the same network, explained to the same maps."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gradcam_core import ModelError, explain, to_input
from gradcam_core.cam import compute_cam
from gradcam_core.imaging import load_image
from gradcam_core.source_onnx import TOLERANCE, check_against_onnxruntime
from gradcam_core.sources import SOURCES, ModelRequest, load_user_model

CHELSEA = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
LABELS = ["cat", "dog", "bird"]


def _export(model: nn.Module, size: int, path: Path, *, free_size: bool = False) -> Path:
    """``model`` saved as ONNX (opset 17, TorchScript exporter), with a free height and width if asked."""
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if free_size else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, torch.zeros(1, 3, size, size), buffer, opset_version=17, dynamo=False,
            input_names=["image"], output_names=["logits"], dynamic_axes=axes,
        )
    path.write_bytes(buffer.getvalue())
    return path


def _resnet18() -> nn.Module:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    with torch.no_grad():  # non-trivial batch norms, folded into the convolutions by the exporter
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _tiny_net() -> nn.Sequential:
    """conv → relu → conv → relu → pool → linear; the two zero biases are stored once by the exporter."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    with torch.no_grad():
        model[0].bias.zero_()
        model[2].bias.zero_()
    return model.eval()


def _one_sentence(message: str) -> str:
    assert "\n" not in message and message.endswith(".") and not re.search(r"[.?!]\s+[A-Z]", message), message
    return message


def _refusal(weights: object, labels: object = LABELS, **options: object) -> str:
    with pytest.raises(ModelError) as info:
        load_user_model("onnx", ModelRequest(weights=weights, labels=labels, **options))
    return _one_sentence(str(info.value))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = _resnet18()
    return model, _export(model, 64, tmp_path_factory.mktemp("onnx") / "resnet18.onnx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = _tiny_net()
    return model, _export(model, 32, tmp_path_factory.mktemp("onnx") / "tiny.onnx", free_size=True)


def test_resnet18_round_trip_gives_the_same_scores_and_maps(resnet) -> None:
    original, path = resnet
    loaded = load_user_model("onnx", ModelRequest(weights=path, labels=LABELS))
    assert loaded.categories == tuple(LABELS) and loaded.name == "resnet18" and loaded.weights_file == path
    assert loaded.title == "ONNX model (resnet18.onnx)" and loaded.weights_sha256 is not None
    prep = loaded.preprocessing
    assert (prep.size, prep.keep_aspect, prep.channels) == (64, False, 3)
    kinds = {info.kind for info in loaded.layers}
    assert {"Conv2d", "ReLU"} <= kinds and len(loaded.layers) > 40
    # The last block's ReLU (after the residual Add) is torchvision's layer4 output.
    assert loaded.default_layer == "layer4/layer4/1/relu_1/Relu"
    assert loaded.layers[-1].shape == (512, 2, 2)

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), original(x), atol=1e-4, rtol=0)

    result = explain(CHELSEA, loaded, target="bird")
    inputs = to_input(result.image, prep)
    converted = compute_cam(loaded.model, inputs, loaded.default_layer, targets=2)[0]
    np.testing.assert_allclose(result.raw_map, converted.numpy(), atol=1e-5, rtol=0)
    reference = compute_cam(original, inputs, "layer4", targets=2)[0]
    # Observed: 3.7e-8 on a map whose maximum is 0.0137 (3e-6 of it); folded batch norms change rounding only.
    assert torch.allclose(converted, reference, atol=1e-4 * float(reference.max()), rtol=0)
    assert check_against_onnxruntime(loaded, result.image) < TOLERANCE


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam", "scorecam"])
def test_tiny_net_maps_equal_those_of_the_pytorch_network(tiny, method) -> None:
    original, path = tiny
    request = ModelRequest(weights=path.read_bytes(), labels=LABELS, input_size=32, file_name="tiny.onnx")
    loaded = load_user_model("onnx", request)
    assert loaded.preprocessing.keep_aspect and loaded.preprocessing.size == 32  # free height and width
    assert loaded.name == "tiny" and loaded.weights_file is None
    assert [info.kind for info in loaded.layers] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(4))  # a wide image
    layer = loaded.layers[-1].name
    assert loaded.default_layer == layer
    mine = compute_cam(loaded.model, x, layer, targets=1, method=method)
    theirs = compute_cam(original, x, "3", targets=1, method=method)
    assert mine.shape == (1, 16, 32) and float(theirs.max()) > 0
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    assert check_against_onnxruntime(loaded, x) < TOLERANCE


def test_the_source_is_registered() -> None:
    source = SOURCES["onnx"]
    assert (source.module, source.suffixes, source.needs_architecture, source.needs_labels) == (
        "source_onnx", (".onnx",), False, True
    )
    _one_sentence(source.files)


def _graph(*nodes: onnx.NodeProto, input_shape: list = [1, 3, 8, 8], domains: tuple = ()) -> onnx.ModelProto:
    """A tiny hand-made classifier: conv → (nodes) → global pool → flatten → 3 scores."""
    weight = numpy_helper.from_array(np.full((3, 3, 1, 1), 0.1, np.float32), "w")
    head = numpy_helper.from_array(np.eye(3, dtype=np.float32), "fc")
    last = nodes[-1].output[0] if nodes else "conv"
    body = [
        helper.make_node("Conv", ["image", "w"], ["conv"], name="conv"),
        *nodes,
        helper.make_node("GlobalAveragePool", [last], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        body, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [weight, head],
    )
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(domain, 1) for domain in domains)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_a_hand_made_graph_loads() -> None:
    loaded = load_user_model("onnx", ModelRequest(weights=_graph().SerializeToString(), labels=LABELS))
    assert loaded.default_layer == "conv" and loaded.preprocessing.size == 8


def test_external_data_is_refused() -> None:
    model = _graph()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../../etc/passwd")
    message = _refusal(model.SerializeToString())
    assert message == (
        "The ONNX model keeps tensor 'w' in a separate data file; give a single self-contained .onnx file."
    )


def test_custom_domains_are_refused_and_unsupported_operators_named() -> None:
    fused = helper.make_node("FusedRelu", ["conv"], ["act"], domain="com.microsoft")
    custom = _graph(fused, domains=("com.microsoft",))
    assert _refusal(custom.SerializeToString()) == (
        "The ONNX model uses operator 'FusedRelu' of the custom domain 'com.microsoft'; "
        "only standard ONNX operators can be converted."
    )
    shrink = _graph(helper.make_node("Shrink", ["conv"], ["act"], name="shrink"))  # fixed batch of 1
    loaded = load_user_model("onnx", ModelRequest(weights=shrink.SerializeToString(), labels=LABELS))
    assert _one_sentence(loaded.gradient_free) == (
        "The ONNX model's operator 'Shrink' has no PyTorch conversion, so only Score-CAM and Eigen-CAM "
        "(run through onnxruntime) can explain it."
    )
    assert [info.name for info in loaded.layers] == ["conv", "shrink"] and loaded.default_layer == "shrink"
    # Score-CAM's masked inputs run one by one through a graph whose batch is fixed at 1.
    assert explain(CHELSEA, loaded, method="scorecam").raw_map.shape == (8, 8)


def test_a_conversion_that_differs_from_onnxruntime_names_the_operator(monkeypatch) -> None:
    import onnx2torch

    convert = onnx2torch.convert

    def wrong(*args, **kwargs):  # a converter bug in the first convolution
        module = convert(*args, **kwargs)
        with torch.no_grad():
            module.get_submodule("conv").weight.add_(0.5)
        return module

    monkeypatch.setattr(onnx2torch, "convert", wrong)
    graph = _graph(helper.make_node("Relu", ["conv"], ["act"], name="act"))
    loaded = load_user_model("onnx", ModelRequest(weights=graph.SerializeToString(), labels=LABELS))
    assert _one_sentence(loaded.gradient_free) == (
        "The PyTorch conversion of the ONNX model differs from onnxruntime by more than 0.0001, first at operator "
        "'Conv' (node 'conv'), so only Score-CAM and Eigen-CAM (run through onnxruntime) can explain it."
    )
    assert loaded.methods == ("scorecam", "eigencam") and loaded.default_layer == "act"


def test_damaged_files_are_refused(tiny, tmp_path) -> None:
    data = tiny[1].read_bytes()
    assert "not an ONNX model" in _refusal(b"\x00\xff not an onnx model \xff" * 4)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    assert _refusal(truncated) in (
        "The file is not an ONNX model (it cannot be parsed as one).",
        "The ONNX file is damaged or incomplete: it fails ONNX's own validity check.",
    )
    assert "is empty" in _refusal(b"")
    assert "limit" in _refusal(data, max_bytes=100)
    assert "does not exist" in _refusal(tmp_path / "missing.onnx")


def test_inputs_outputs_and_labels_must_fit(tiny) -> None:
    data = tiny[1].read_bytes()
    assert _refusal(data, ["a", "b"]) == "The labels list has 2 names but the model has 3 outputs."
    assert _refusal(data, None) == "An ONNX model needs its class names: give a labels file."
    vector = _graph(input_shape=[1, 10])
    assert _refusal(vector.SerializeToString()) == (
        "The ONNX model's input 'image' has shape 1×10; an image model takes "
        "batch × channels × height × width with 1 or 3 channels."
    )
    assert "height and width must be equal" in _refusal(_graph(input_shape=[1, 3, 8, 16]).SerializeToString())
    assert "input size must be 8" in _refusal(_graph().SerializeToString(), input_size=64)
    feature_map = _graph()
    feature_map.graph.output[0].CopyFrom(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 3, 8, 8]))
    assert "first output has shape 1×3×8×8" in _refusal(feature_map.SerializeToString())


def test_a_picture_is_checked_against_onnxruntime(tiny) -> None:
    loaded = load_user_model("onnx", ModelRequest(weights=tiny[1], labels=LABELS, input_size=32))
    assert check_against_onnxruntime(loaded, load_image(CHELSEA)) < TOLERANCE
