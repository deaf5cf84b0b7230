"""The gradient-free path: ONNX graphs explained through onnxruntime equal the same methods in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gradcam_core import MethodError, ModelError, explain, to_input
from gradcam_core.cam import trace_cam
from gradcam_core.onnx_runtime import RuntimeModule
from gradcam_core.source_onnx import check_against_onnxruntime
from gradcam_core.sources import ModelRequest, load_user_model

CHELSEA = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
LABELS = ["cat", "dog", "bird"]
SHRINK = (
    "The ONNX model's operator 'Shrink' has no PyTorch conversion, so only Score-CAM and Eigen-CAM (run through "
    "onnxruntime) can explain it."
)


def _network(activation: nn.Module) -> nn.Sequential:
    """conv → activation → conv (stride 2) → relu → pool → linear, seeded: 3 classes."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), activation, nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()


def _onnx(network: nn.Sequential, op_type: str) -> bytes:
    """``network`` written by hand as an ONNX graph (free batch, height and width), its activation as ``op_type``."""
    first, _, second, _, _, _, head = network
    arrays = {
        "w1": first.weight, "b1": first.bias, "w2": second.weight, "b2": second.bias,
        "fc": head.weight, "fc_bias": head.bias,
    }
    initializers = [numpy_helper.from_array(value.detach().numpy(), name) for name, value in arrays.items()]
    activation = {"Shrink": {"lambd": 0.5}, "Relu": {}}[op_type]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(op_type, ["a"], ["b"], name="act", **activation),
        helper.make_node("Conv", ["b", "w2", "b2"], ["c"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["d"], name="relu"),
        helper.make_node("GlobalAveragePool", ["d"], ["e"], name="pool"),
        helper.make_node("Flatten", ["e"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc", "fc_bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _load(data: bytes):
    return load_user_model("onnx", ModelRequest(weights=data, labels=LABELS, input_size=32, file_name="tiny.onnx"))


@pytest.fixture(scope="module")
def shrink():
    network = _network(nn.Hardshrink(0.5))
    return network, _load(_onnx(network, "Shrink"))


def test_an_unconvertible_graph_loads_gradient_free(shrink) -> None:
    _, loaded = shrink
    assert loaded.gradient_free == SHRINK and loaded.methods == ("scorecam", "eigencam")
    assert isinstance(loaded.model, RuntimeModule) and loaded.check_output is None
    assert [(info.name, info.kind, info.shape) for info in loaded.layers] == [
        ("conv1", "Conv", (4, 32, 32)), ("act", "Shrink", (4, 32, 32)),
        ("conv2", "Conv", (4, 16, 16)), ("relu", "Relu", (4, 16, 16)),
    ]
    assert (loaded.default_layer, loaded.default_layer_for("scorecam")) == ("relu", "relu")
    with pytest.raises(MethodError) as info:
        explain(CHELSEA, loaded)  # Grad-CAM, the default method
    assert str(info.value) == SHRINK
    with pytest.raises(ModelError, match="is not a PyTorch conversion of an ONNX file"):
        check_against_onnxruntime(loaded, torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("method", ["scorecam", "eigencam"])
@pytest.mark.parametrize(("layer", "torch_layer"), [("relu", "3"), ("act", "1")])
def test_gradient_free_maps_equal_the_pytorch_network(shrink, method, layer, torch_layer) -> None:
    network, loaded = shrink
    result = explain(CHELSEA, loaded, layer=layer, target="dog", method=method, keep_trace=True)
    inputs = to_input(result.image, loaded.preprocessing)
    reference = trace_cam(network, inputs, torch_layer, 1, method)
    assert result.notice is None and result.trace.gradients is None and result.method == method
    assert float(reference.cam.max()) > 0.01  # a map with something in it
    np.testing.assert_allclose(result.raw_map, reference.cam[0].numpy(), atol=1e-4 * float(reference.cam.max()))
    torch.testing.assert_close(result.trace.weights, reference.weights, atol=1e-5, rtol=1e-4)
    probabilities = torch.softmax(reference.logits[0], 0)
    assert result.predictions[0].probability == pytest.approx(float(probabilities.max()), abs=1e-6)
    assert result.target.probability == pytest.approx(float(probabilities[1]), abs=1e-6)

    batch = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(5))  # two wide images
    mine = loaded.runtime_cam(batch, layer, [2, 0], method)
    theirs = trace_cam(network, batch, torch_layer, [2, 0], method)
    assert mine.cam.shape == theirs.cam.shape == ((2, 32, 48) if layer == "act" else (2, 16, 24))
    torch.testing.assert_close(mine.cam, theirs.cam, atol=1e-4 * float(theirs.cam.max()), rtol=0)


def test_a_conversion_that_disagrees_on_the_image_falls_back(shrink) -> None:
    network = _network(nn.ReLU())
    loaded = _load(_onnx(network, "Relu"))
    assert loaded.gradient_free is None and loaded.check_output is not None
    assert explain(CHELSEA, loaded, method="scorecam").notice is None
    with torch.no_grad():  # the converted module goes wrong after it was checked (a converter bug on some inputs)
        loaded.model.get_submodule("conv1").weight[0, 0, 0, 0] += 1.0
    notice = (
        "On this image the PyTorch conversion of the ONNX model differs from onnxruntime by more than 0.0001, first "
        "at operator 'Conv' (node 'conv1'), so only Score-CAM and Eigen-CAM (run through onnxruntime) can explain it."
    )
    result = explain(CHELSEA, loaded, target="bird", method="scorecam")
    assert result.notice == notice
    inputs = to_input(result.image, loaded.preprocessing)
    reference = trace_cam(network, inputs, "3", 2, "scorecam").cam[0]  # onnxruntime runs the intact graph
    np.testing.assert_allclose(result.raw_map, reference.numpy(), atol=1e-4 * float(reference.max()))
    with pytest.raises(MethodError) as info:
        explain(CHELSEA, loaded, method="gradcam")
    assert str(info.value) == notice
    with pytest.raises(ModelError, match="differs from onnxruntime by more than 0.0001, first at operator 'Conv'"):
        check_against_onnxruntime(loaded, inputs)


def test_the_dashboard_offers_only_the_gradient_free_methods_and_says_why() -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard import cache
    from tests.page_text import shown

    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=180)
    at = at.run()
    at.selectbox(key="model").set_value("own-model").run()
    at.selectbox(key="own-source").set_value("onnx").run()
    at.number_input(key="own-size").set_value(32)
    at.file_uploader(key="own-weights-onnx").upload("shrink.onnx", _onnx(_network(nn.Hardshrink(0.5)), "Shrink"))
    at.file_uploader(key="own-labels").upload("labels.txt", "\n".join(LABELS).encode()).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    picker = at.selectbox(key="method")
    assert (picker.options, picker.value) == (["Score-CAM (slow)", "Eigen-CAM"], "eigencam")
    assert SHRINK in [shown(caption.value) for caption in at.caption]
    assert any("shrink.onnx" in shown(m.value) and "Eigen-CAM" in shown(m.value) for m in at.markdown)


def test_the_command_line_prints_the_notice_of_an_image_the_conversion_gets_wrong(
    monkeypatch, tmp_path, capsys
) -> None:
    import json

    import onnx2torch

    from gradcam_core.cli import main

    convert = onnx2torch.convert

    def wrong_when_wide(*args, **kwargs):  # a converter bug that only shows on non-square inputs, not on the probe
        module = convert(*args, **kwargs)
        module.get_submodule("conv1").register_forward_hook(
            lambda layer, inputs, output: output + 1.0 if output.shape[-1] != output.shape[-2] else None
        )
        return module

    monkeypatch.setattr(onnx2torch, "convert", wrong_when_wide)
    (tmp_path / "tiny.onnx").write_bytes(_onnx(_network(nn.ReLU()), "Relu"))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    status = main([
        str(CHELSEA), "--out", str(tmp_path / "out"), "--source", "onnx", "--weights", str(tmp_path / "tiny.onnx"),
        "--labels", str(tmp_path / "labels.txt"), "--input-size", "32", "--method", "eigencam",
    ])
    notice = (
        "On this image the PyTorch conversion of the ONNX model differs from onnxruntime by more than 0.0001, first "
        "at operator 'Conv' (node 'conv1'), so only Score-CAM and Eigen-CAM (run through onnxruntime) can explain it."
    )
    assert status == 0 and f"note: {CHELSEA}: {notice}" in capsys.readouterr().err.splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["images"][0]["notice"] == notice


def test_onnxruntime_never_busy_waits_beside_pytorch() -> None:
    """Its thread pools do not spin after a run: spinning made PyTorch's next forward on the same 2 cores take
    3.5x as long (measured for the per-image check, see README)."""
    from gradcam_core.onnx_runtime import _session

    session = _session(_onnx(_network(nn.ReLU()), "Relu"))
    options = session.get_session_options()
    for pool in ("intra_op", "inter_op"):
        assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == "0"
