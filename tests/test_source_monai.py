"""The MONAI source (2-D): tiny random MONAI classifiers by name and as bundles, loaded as data, never run.

Faithful by construction: the map of ``explain`` on the loaded model equals a Grad-CAM / HiResCAM computed by
hand (hooks and ``torch.autograd.grad``) on the very network that was saved. Bundles whose configs could run
code are refused with one sentence.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from monai.networks import nets
from safetensors.torch import save
from torch import Tensor, nn

from gradcam_core import ModelError, explain, to_input
from gradcam_core.imaging import load_image
from gradcam_core.sources import SOURCES, ModelRequest, load_user_model

CHELSEA = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
NETWORK_DEF = {"_target_": "monai.networks.nets.DenseNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
               "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
METADATA = {"network_data_format": {"inputs": {"image": {"spatial_shape": [48, 48]}},
                                    "outputs": {"pred": {"channel_def": {"0": "normal", "1": "lesion"}}}}}


def _randomise_batch_norm(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial statistics, so a wrong load would show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(5)
    return _randomise_batch_norm(nets.DenseNet(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"}))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(6)
    return _randomise_batch_norm(nets.resnet10(spatial_dims=2, n_input_channels=3, num_classes=3))


def _bundle(
    weights: bytes,
    network_def: dict | None = None,
    metadata: dict | None = METADATA,
    *,
    config: dict | None = None,
    weights_name: str = "models/model.safetensors",
    extra: dict | None = None,
) -> bytes:
    """A bundle zipped in one top folder, as ``monai.bundle`` exports it."""
    inference = config if config is not None else {"network_def": network_def or NETWORK_DEF}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("my_bundle/configs/inference.json", json.dumps(inference))
        if metadata is not None:
            archive.writestr("my_bundle/configs/metadata.json", json.dumps(metadata))
        archive.writestr(f"my_bundle/{weights_name}", weights)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _reference_map(model: nn.Module, inputs: Tensor, layer: str, target: int, method: str) -> Tensor:
    """Grad-CAM or HiResCAM by hand on the MONAI network itself."""
    captured: list[Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    (gradients,) = torch.autograd.grad(logits[0, target], captured[0])
    if method == "gradcam":
        cam = (gradients.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1)
    else:
        cam = (gradients * captured[0]).sum(dim=1)
    return torch.relu(cam)[0].detach()


def _refusal(request: ModelRequest, match: str) -> str:
    with pytest.raises(ModelError, match=match) as info:
        load_user_model("monai", request)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and "; " not in message.split(".")[-1], message
    return message


def test_registry_entry() -> None:
    source = SOURCES["monai"]
    assert (source.module, source.needs_architecture, source.needs_labels) == ("source_monai", True, True)
    assert ".zip" in source.suffixes and ".safetensors" in source.suffixes


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_named_network_map_is_the_saved_networks(resnet: nn.Module, method: str) -> None:
    request = ModelRequest(weights=save(resnet.state_dict()), architecture="ResNet10", labels=["a", "b", "c"],
                           input_size=64)
    loaded = load_user_model("monai", request)
    assert loaded.default_layer == "layer4" and loaded.preprocessing.channels == 3
    image = load_image(CHELSEA)
    result = explain(image, loaded, layer="layer4", target=1, method=method)
    expected = _reference_map(resnet, to_input(image, loaded.preprocessing), "layer4", 1, method)
    assert expected.abs().max() > 0
    assert torch.allclose(torch.from_numpy(result.raw_map), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_bundle_map_is_the_saved_networks(densenet: nn.Module, method: str) -> None:
    loaded = load_user_model("monai", ModelRequest(weights=_bundle(save(densenet.state_dict())),
                                                   file_name="my_bundle.zip"))
    assert loaded.categories == ("normal", "lesion")
    assert loaded.preprocessing.size == 48 and loaded.preprocessing.channels == 1 and loaded.preprocessing.grayscale
    assert loaded.default_layer == "class_layers.relu"
    image = load_image(CHELSEA)
    result = explain(image, loaded, layer=loaded.default_layer, target=1, method=method)
    inputs = to_input(image, loaded.preprocessing)
    if method == "gradcam":
        expected = _reference_map(densenet, inputs, "class_layers.relu", 1, method)
    else:  # LayerCAM: ReLU(gradients) * activations, summed over channels
        captured: list[Tensor] = []
        handle = densenet.class_layers.relu.register_forward_hook(lambda m, a, o: captured.append(o))
        try:
            logits = densenet(inputs)
        finally:
            handle.remove()
        (gradients,) = torch.autograd.grad(logits[0, 1], captured[0])
        expected = torch.relu((torch.relu(gradients) * captured[0]).sum(dim=1))[0].detach()
    assert expected.abs().max() > 0
    assert torch.allclose(torch.from_numpy(result.raw_map), expected, atol=1e-5)


def test_bundle_folder_with_torch_weights(densenet: nn.Module, tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({"network_def": NETWORK_DEF}), encoding="utf-8")
    torch.save(densenet.state_dict(), tmp_path / "models" / "model.pt")
    loaded = load_user_model("monai", ModelRequest(weights=str(tmp_path), labels=["no", "yes"]))
    assert loaded.categories == ("no", "yes") and loaded.preprocessing.size == 224
    assert torch.equal(loaded.model.class_layers.out.weight, densenet.class_layers.out.weight)


def test_a_bundle_without_class_names_needs_labels(densenet: nn.Module) -> None:
    _refusal(ModelRequest(weights=_bundle(save(densenet.state_dict()), metadata=None)), "names no classes")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"init_features": "$__import__('os').system('echo ran')"}, "holds an expression"),
        ({"in_channels": "@channels"}, "holds an expression"),
        ({"block_config": ["%configs/common.yaml#blocks", 2]}, "holds an expression"),
        ({"_target_": "monai.transforms.LoadImage"}, "targets 'monai.transforms.LoadImage', not a classifier"),
        ({"_target_": "builtins.eval"}, "targets 'builtins.eval', not a classifier"),
        ({"_target_": "$monai.networks.nets.DenseNet"}, "not a classifier"),
        ({"act": {"_target_": "torch.nn.ReLU"}}, "builds an object"),
        ({"_requires_": "$print('ran')"}, "holds an expression"),
        ({"spatial_dims": 3}, "3-D; only 2-D"),
        ({"out_channels": 5}, "weights do not fit the MONAI DenseNet"),
        ({"growth_rate": 6}, "weights do not fit the MONAI DenseNet"),
    ],
)
def test_unsafe_or_wrong_bundles_are_refused(densenet: nn.Module, changes: dict, match: str) -> None:
    _refusal(ModelRequest(weights=_bundle(save(densenet.state_dict()), {**NETWORK_DEF, **changes})), match)


def test_a_bundle_without_network_or_weights_is_refused(densenet: nn.Module) -> None:
    weights = save(densenet.state_dict())
    _refusal(ModelRequest(weights=_bundle(weights, config={"network": "$@network_def.to(@device)"})),
             "no network_def")
    _refusal(ModelRequest(weights=_bundle(weights, weights_name="models/model.ts")), "lacks models/model")
    _refusal(ModelRequest(weights=_bundle(weights, extra={"../evil.json": "{}"})), "unsafe path")
    _refusal(ModelRequest(weights=_bundle(pickle.dumps({"x": print}), weights_name="models/model.pt")),
             "never unpickled|neither safetensors")


def test_a_bundle_over_the_limit_is_refused(densenet: nn.Module) -> None:
    data = _bundle(save(densenet.state_dict()), extra={"my_bundle/docs/big.bin": b"\0" * 5_000_000})
    assert len(data) < 1_000_000
    _refusal(ModelRequest(weights=data, max_bytes=2_000_000), r"unpacks to .* over the .* limit")


@pytest.mark.parametrize(
    ("request_options", "match"),
    [
        ({"architecture": None}, "Name the MONAI network"),
        ({"architecture": "UNet"}, "'UNet' is not a MONAI classifier offered here"),
        ({"labels": None}, "needs its class names"),
        ({"labels": ["a", "b"]}, "has 2 names but the model has 3 outputs"),
        ({"architecture": "SEResNet50"}, "weights do not fit the MONAI SEResNet50"),
    ],
)
def test_named_refusals(resnet: nn.Module, request_options: dict, match: str) -> None:
    options = {"architecture": "resnet10", "labels": ["a", "b", "c"], **request_options}
    _refusal(ModelRequest(weights=save(resnet.state_dict()), **options), match)


def test_named_pickle_is_refused() -> None:
    _refusal(ModelRequest(weights=pickle.dumps({"x": print}), architecture="resnet10", labels=["a"]), "never unpickled")
