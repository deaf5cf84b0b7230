"""The Hugging Face source: tiny random transformers classifiers saved with ``save_pretrained``, loaded as data.

Faithful by construction: the map of ``explain`` on the loaded model equals a Grad-CAM / HiResCAM computed by
hand (hooks and ``torch.autograd.grad``) on the very network that was saved. Every unsafe or broken folder is
refused with one sentence.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from torch import Tensor, nn

from gradcam_core import LayerError, LoadedModel, ModelError, compute_cam, explain, to_input, trace_cam
from gradcam_core.imaging import load_image
from gradcam_core.sources import SOURCES, ModelRequest, load_user_model
from tests.test_transformers import _hook_count, _pytorch_grad_cam

CHELSEA = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
LABELS = {0: "cat", 1: "dog", 2: "bird"}
PREPROCESSOR = {"size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
                "resample": 3, "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255}


def _vit() -> nn.Module:
    torch.manual_seed(3)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    return transformers.ViTForImageClassification(config).eval()


def _convnext() -> nn.Module:
    torch.manual_seed(4)
    config = transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    model = transformers.ConvNextForImageClassification(config).eval()
    with torch.no_grad():  # the layer scale starts at 1e-6: make the blocks count
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale_parameter"):
                parameter.uniform_(0.5, 1.5)
    return model


def _swin() -> nn.Module:
    """A tiny Swin: 8×8 then 4×4 patch grids, 2×2 windows, a shifted block; its last stage has as many channels as
    tokens (16), so the pooled ``(N, 16, 1)`` output looks like 16 tokens and must not be read as them."""
    torch.manual_seed(5)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 1], window_size=2,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    model = transformers.SwinForImageClassification(config).eval()
    with torch.no_grad():  # scores of order one, so that agreeing to 1e-5 means something
        model.classifier.weight.normal_(std=1.0)
    return model


def _save(model: nn.Module, folder: Path, preprocessor: dict | None = PREPROCESSOR) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return folder


def _zip(folder: Path, inside: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, inside + path.name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return _vit()


@pytest.fixture(scope="module")
def convnext() -> nn.Module:
    return _convnext()


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    return _swin()


@pytest.fixture(scope="module")
def swin_loaded(swin: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_user_model("huggingface", ModelRequest(weights=str(_save(swin, tmp_path_factory.mktemp("swin")))))


@pytest.fixture(scope="module")
def vit_folder(vit: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(vit, tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def convnext_folder(convnext: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(convnext, tmp_path_factory.mktemp("convnext"))


def _reference_map(model: nn.Module, inputs: Tensor, layer: str, target: int, method: str,
                   prefix_tokens: int = 0) -> Tensor:
    """Grad-CAM or HiResCAM by hand on the transformers model itself: its layer's output and the gradient of
    the target logit with respect to it (a block's tuple: its first element), tokens (after ``prefix_tokens``)
    laid on their square grid."""
    captured: list[Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    try:
        logits = model(pixel_values=inputs).logits
    finally:
        handle.remove()
    activations = captured[0]
    (gradients,) = torch.autograd.grad(logits[0, target], activations)
    if activations.ndim == 3:  # (N, prefix + h*w, C) -> (N, C, h, w)
        side = int((activations.shape[1] - prefix_tokens) ** 0.5)
        activations, gradients = (
            t[:, prefix_tokens:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
            for t in (activations, gradients)
        )
    if method == "gradcam":
        cam = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    else:  # hirescam: element-wise
        cam = (gradients * activations).sum(dim=1)
    return torch.relu(cam)[0].detach()


def _refusal(request: ModelRequest, match: str) -> str:
    with pytest.raises(ModelError, match=match) as info:
        load_user_model("huggingface", request)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0, message
    return message


def test_registry_entry() -> None:
    source = SOURCES["huggingface"]
    assert (source.module, source.suffixes, source.needs_architecture, source.needs_labels) == (
        "source_huggingface", (".zip",), False, False,
    )


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_vit_map_is_the_saved_networks(vit: nn.Module, vit_folder: Path, method: str) -> None:
    loaded = load_user_model("huggingface", ModelRequest(weights=str(vit_folder)))
    assert loaded.categories == ("cat", "dog", "bird")
    assert loaded.default_layer == "model.vit.layers.1.layernorm_before"  # the last tokens before the last attention
    assert {info.layout for info in loaded.layers} >= {"tokens"}
    assert loaded.preprocessing.size == 32 and not loaded.preprocessing.keep_aspect
    image = load_image(CHELSEA)
    result = explain(image, loaded, layer=loaded.default_layer, target=1, method=method)
    inputs = to_input(image, loaded.preprocessing)
    expected = _reference_map(vit, inputs, "vit.layers.1.layernorm_before", 1, method, prefix_tokens=1)
    assert expected.shape == (4, 4) and expected.abs().max() > 0
    assert torch.allclose(torch.from_numpy(result.raw_map), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_convnext_zip_map_is_the_saved_networks(convnext: nn.Module, convnext_folder: Path, method: str) -> None:
    data = _zip(convnext_folder, inside="my-model/")
    loaded = load_user_model("huggingface", ModelRequest(weights=data, file_name="my-model.zip"))
    assert loaded.default_layer == "model.convnext.encoder.stages.1"
    names = {info.name for info in loaded.layers}
    # transformers' ConvNeXt permutes to channels-last inside its blocks: those outputs are not offered
    assert "model.convnext.encoder.stages.1.layers.0.dwconv" in names
    assert not any(name.endswith(("pwconv1", "pwconv2", ".act", "layers.0.layernorm")) for name in names)
    image = load_image(CHELSEA)
    result = explain(image, loaded, layer=loaded.default_layer, target=2, method=method)
    inputs = to_input(image, loaded.preprocessing)
    expected = _reference_map(convnext, inputs, "convnext.encoder.stages.1", 2, method)
    assert expected.abs().max() > 0
    assert torch.allclose(torch.from_numpy(result.raw_map), expected, atol=1e-5)


def test_preprocessing_is_read_and_overridable(vit_folder: Path) -> None:
    prep = load_user_model("huggingface", ModelRequest(weights=str(vit_folder))).preprocessing
    assert prep.mean == pytest.approx((0.5, 0.4, 0.3)) and prep.std == pytest.approx((0.2, 0.25, 0.3))
    assert prep.interpolation.value == "bicubic"
    request = ModelRequest(weights=str(vit_folder), mean=[0.1], std=[0.9], labels=["a", "b", "c"])
    loaded = load_user_model("huggingface", request)
    assert loaded.preprocessing.mean == (0.1,) * 3 and loaded.preprocessing.std == (0.9,) * 3
    assert loaded.categories == ("a", "b", "c")


def test_rescale_factor_becomes_mean_and_std(vit: nn.Module, tmp_path: Path) -> None:
    """HF: (x * r - mean) / std on 0..255 pixels; ours: (x / 255 - mean') / std' - the same numbers."""
    folder = _save(vit, tmp_path, {**PREPROCESSOR, "rescale_factor": 1 / 127.5, "image_mean": [1.0] * 3,
                                   "image_std": [1.0] * 3})
    prep = load_user_model("huggingface", ModelRequest(weights=str(folder))).preprocessing
    assert prep.mean == pytest.approx((0.5,) * 3) and prep.std == pytest.approx((0.5,) * 3)


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_remote_code_is_refused(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    folder = _save(request.getfixturevalue(fixture), tmp_path)
    _edit_config(folder, auto_map={"AutoModelForImageClassification": "modeling_evil.EvilModel"})
    (folder / "modeling_evil.py").write_text("raise SystemExit('ran')\n", encoding="utf-8")
    _refusal(ModelRequest(weights=str(folder)), r"own Python code \(auto_map\)")
    _refusal(ModelRequest(weights=_zip(folder)), r"own Python code \(auto_map\)")


def test_remote_image_processor_is_refused(vit: nn.Module, tmp_path: Path) -> None:
    folder = _save(vit, tmp_path, {**PREPROCESSOR, "auto_map": {"AutoImageProcessor": "evil.Processor"}})
    _refusal(ModelRequest(weights=str(folder)), "preprocessor_config.json asks for the model's own Python code")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model_type": "evil"}, "model_type 'evil' is not a supported image classifier"),
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not a supported image classifier"),
        ({"architectures": ["ViTForMaskedImageModeling"]}, "not an image classifier"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantised"),
        ({"num_labels": 5, "id2label": {str(i): f"c{i}" for i in range(5)}}, "weights hold .* values but"),
        ({"hidden_size": 4096}, "weights hold .* values but"),
    ],
)
def test_bad_configs_are_refused(vit: nn.Module, tmp_path: Path, changes: dict, match: str) -> None:
    folder = _save(vit, tmp_path)
    _edit_config(folder, **changes)
    _refusal(ModelRequest(weights=str(folder)), match)


def test_renamed_weights_are_refused(vit: nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _save(vit, tmp_path)
    state = load_file(folder / "model.safetensors")
    state["classifier.renamed"] = state.pop("classifier.bias")
    save_file(state, folder / "model.safetensors")
    _refusal(ModelRequest(weights=str(folder)), "weights do not fit the vit model of config.json: they lack")


def test_pickled_objects_are_refused(vit: nn.Module, tmp_path: Path) -> None:
    folder = _save(vit, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"classifier.bias": print}))
    _refusal(ModelRequest(weights=str(folder)), "never unpickled")


def test_pytorch_model_bin_is_read_as_data(vit: nn.Module, tmp_path: Path) -> None:
    folder = _save(vit, tmp_path)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loaded = load_user_model("huggingface", ModelRequest(weights=str(folder)))
    assert torch.equal(loaded.model.model.classifier.weight, vit.classifier.weight)


@pytest.mark.parametrize(
    ("missing", "match"),
    [("model.safetensors", "lacks model.safetensors"), ("preprocessor_config.json", "lacks preprocessor_config"),
     ("config.json", "lacks config.json")],
)
def test_missing_files_are_refused(vit: nn.Module, tmp_path: Path, missing: str, match: str) -> None:
    folder = _save(vit, tmp_path)
    (folder / missing).unlink()
    _refusal(ModelRequest(weights=str(folder)), match)


def test_unsafe_zips_are_refused(vit_folder: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in vit_folder.iterdir():
            archive.write(path, path.name)
        archive.writestr("../../outside.txt", "x")
    _refusal(ModelRequest(weights=buffer.getvalue()), "unsafe path '../../outside.txt'")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/config.json", "{}")
        archive.writestr("b/config.json", "{}")
    _refusal(ModelRequest(weights=buffer.getvalue()), "one config.json")
    _refusal(ModelRequest(weights=b"not a zip at all"), "must be a folder or a zip of it")


def test_zip_bomb_is_refused(vit_folder: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in vit_folder.iterdir():
            archive.write(path, path.name)
        archive.writestr("README.md", b"\0" * 20_000_000)  # 20 MB of zeros, about 20 kB compressed
    data = buffer.getvalue()
    assert len(data) < 1_000_000
    _refusal(ModelRequest(weights=data, max_bytes=2_000_000), r"unpacks to .* over the .* limit")


def test_weights_over_the_limit_are_refused(vit_folder: Path) -> None:
    _refusal(ModelRequest(weights=str(vit_folder), max_bytes=1_000), "more than the")


_SMALL = {"num_labels": 3}
_OTHER_TYPES = {
    "deit": (transformers.DeiTForImageClassification, transformers.DeiTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        architectures=["DeiTForImageClassification"], **_SMALL)),
    "beit": (transformers.BeitForImageClassification, transformers.BeitConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        **_SMALL)),
    "convnextv2": (transformers.ConvNextV2ForImageClassification, transformers.ConvNextV2Config(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **_SMALL)),
    "regnet": (transformers.RegNetForImageClassification, transformers.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8, **_SMALL)),
    "efficientnet": (transformers.EfficientNetForImageClassification, transformers.EfficientNetConfig(
        image_size=64, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320, **_SMALL)),
}


@pytest.mark.parametrize("model_type", sorted(_OTHER_TYPES))
def test_every_other_model_type_loads_and_explains(model_type: str, tmp_path: Path) -> None:
    network_class, config = _OTHER_TYPES[model_type]
    torch.manual_seed(7)
    folder = _save(network_class(config).eval(), tmp_path, {**PREPROCESSOR, "size": config.image_size
                                                            if model_type in ("deit", "beit") else 64})
    loaded = load_user_model("huggingface", ModelRequest(weights=str(folder)))
    assert loaded.title.startswith(model_type)
    assert any(info.layout == "tokens" for info in loaded.layers) == (model_type in ("deit", "beit"))
    result = explain(load_image(CHELSEA), loaded, method="gradcam")
    assert result.raw_map.ndim == 2 and result.raw_map.size > 1


# ------------------------------------------------------------------------------------------ Swin

SWIN_STAGES = ("model.swin.encoder.layers.0", "model.swin.encoder.layers.1")


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
@pytest.mark.parametrize("layer", ["swin.layernorm", "swin.encoder.layers.0"])
def test_swin_map_is_the_saved_networks(swin: nn.Module, swin_loaded: LoadedModel, layer: str, method: str) -> None:
    image = load_image(CHELSEA)
    result = explain(image, swin_loaded, layer=f"model.{layer}", target=1, method=method)
    expected = _reference_map(swin, to_input(image, swin_loaded.preprocessing), layer, 1, method)
    assert expected.shape == (4, 4) and expected.amax() > 0.01
    assert torch.allclose(torch.from_numpy(result.raw_map), expected, atol=1e-5)


def test_swin_layers_are_its_stages_on_their_grids(swin_loaded: LoadedModel) -> None:
    assert swin_loaded.title.startswith("swin") and swin_loaded.categories == ("cat", "dog", "bird")
    assert swin_loaded.preprocessing.size == 32 and not swin_loaded.preprocessing.keep_aspect  # squeezed, like ViT
    assert swin_loaded.default_layer == "model.swin.layernorm" == swin_loaded.layers[-1].name  # last before pooling
    by_name = {info.name: info for info in swin_loaded.layers}
    expected = {
        "model.swin.embeddings": (8, 8, 8),  # returns (tokens, (8, 8))
        "model.swin.encoder.layers.0.blocks.1.layernorm_after": (8, 8, 8),  # the shifted block
        "model.swin.encoder.layers.0.blocks.1": (8, 8, 8),  # returns (tokens, attention weights)
        "model.swin.encoder.layers.0.downsample": (16, 4, 4),  # patch merging: the halved grid
        "model.swin.encoder.layers.0": (16, 4, 4),  # a stage returns its merged tokens first
        "model.swin.encoder.layers.1": (16, 4, 4),
        "model.swin.layernorm": (16, 4, 4),
    }
    for name, shape in expected.items():
        assert (by_name[name].shape, by_name[name].layout) == (shape, "sequence"), name
    assert by_name["model.swin.embeddings.patch_embeddings.projection"].layout == "nchw"
    # windows, position biases (maps of no image) and the pooled (N, 16, 1) output are not offered
    assert not [name for name in by_name if ".attention" in name or "position" in name or "pooler" in name]
    with pytest.raises(LayerError, match="does not output a 4-D feature map"):
        compute_cam(swin_loaded.model, torch.randn(1, 3, 32, 32), "model.swin.pooler", 0)


def test_swin_maps_are_transformers_own_stage_maps(swin: nn.Module, swin_loaded: LoadedModel) -> None:
    """transformers lays each stage's tokens out itself (``reshaped_hidden_states``, ``(N, C, h, w)``); the maps
    are those, also for a 28×44 input whose odd 7×11 grid merges to 4×6, known only as the model runs."""
    x = torch.randn(2, 3, 28, 44, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        states = swin(pixel_values=x, output_hidden_states=True).reshaped_hidden_states  # embeddings, each stage
    hooks = _hook_count(swin_loaded.model)
    for state, layer in zip(states, ("model.swin.embeddings", *SWIN_STAGES), strict=True):
        trace = trace_cam(swin_loaded.model, x, layer, [0, 2])
        assert trace.activations.shape == state.shape and trace.cam.shape == (2, *state.shape[2:])
        assert torch.allclose(trace.activations, state, atol=1e-6), layer
        assert trace.weighted_sum.abs().amax() > 0
    assert [state.shape[2:] for state in states] == [(7, 11), (4, 6), (4, 6)]
    assert _hook_count(swin_loaded.model) == hooks


@pytest.mark.parametrize("size", [(32, 32), (28, 44)])
def test_swin_gradcam_agrees_with_pytorch_grad_cam(swin_loaded: LoadedModel, size: tuple[int, int]) -> None:
    height, width = ((side // 4 + 1) // 2 for side in size)  # the last stage's grid: patches of 4, merged once

    def reshape_transform(tensor: Tensor) -> Tensor:  # pytorch-grad-cam's documented Swin reshape_transform
        result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    layer = "model.swin.layernorm"
    trace = trace_cam(swin_loaded.model, x, layer, [1, 2])
    activations, gradients, theirs = _pytorch_grad_cam(swin_loaded.model, layer, x, [1, 2], reshape_transform)
    for ours, reference in ((trace.activations, activations), (trace.gradients, gradients), (trace.cam, theirs)):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-5)
    assert theirs.shape == (2, height, width) and (theirs.reshape(2, -1).max(1) > 0.01).all()
