"""Model registry: the offline built-in model, torchvision models from the hub cache, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from gradcam_core import (
    DEFAULT_MODEL,
    MODELS,
    ModelError,
    ModelUnavailableError,
    available_models,
    load_model,
)


def test_builtin_model_loads_offline(lite0) -> None:
    assert lite0.name == DEFAULT_MODEL == "efficientnet_lite0"
    assert len(lite0.categories) == 1000 and lite0.categories[281] == "tabby"
    assert not lite0.model.training
    assert lite0.preprocessing.mean == (0.5, 0.5, 0.5) and lite0.preprocessing.std == (0.5, 0.5, 0.5)
    names = [layer.name for layer in lite0.layers]
    assert lite0.default_layer == "_bn1" and lite0.default_layer in names
    head = next(layer for layer in lite0.layers if layer.name == "_bn1")
    assert head.shape == (1280, 7, 7)
    assert names.index("_blocks.0") < names.index("_blocks.15") < names.index("_bn1") < names.index("_head_act")


def test_candidate_layers_exclude_shared_and_identity_modules(lite0) -> None:
    names = {layer.name for layer in lite0.layers}
    assert "_blocks.3._swish" not in names  # one ReLU6 module used twice inside a block
    assert not any(name.endswith("static_padding") for name in names)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("resnet50", "layer4"), ("densenet121", "features"), ("vgg16", "features.29"),
     ("mobilenet_v3_large", "features"), ("efficientnet_b0", "features"), ("convnext_tiny", "features")],
)
def test_torchvision_default_layers_are_last_blocks(name: str, layer: str) -> None:
    assert MODELS[name].default_layer == layer
    model = torchvision.models.get_model(name, weights=None)
    assert model.get_submodule(layer) is not None


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ModelError, match=r"Unknown model 'resnet9000'; choose one of: efficientnet_lite0, resnet50"):
        load_model("resnet9000")


def test_missing_weights_say_which_file_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError) as info:
        load_model("resnet50")
    message = str(info.value)
    assert "resnet50-11ad3fa6.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "\n" not in message
    statuses = {status.name: status for status in available_models()}
    assert statuses["efficientnet_lite0"].available
    assert not statuses["resnet50"].available and "resnet50-11ad3fa6.pth" in statuses["resnet50"].reason


@pytest.fixture
def cached_mobilenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A hub cache holding mobilenet_v3_large weights (random, saved under the official file name)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V2
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    torch.save(state, checkpoints / Path(weights.url).name)
    return state


def test_torchvision_model_from_hub_cache(cached_mobilenet: dict[str, torch.Tensor]) -> None:
    loaded = load_model("mobilenet_v3_large")
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, cached_mobilenet[key]), key
    weights = torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V2
    assert loaded.categories == tuple(weights.meta["categories"])
    assert loaded.preprocessing.size == weights.transforms().crop_size[0]
    assert loaded.preprocessing.mean == tuple(weights.transforms().mean)
    assert loaded.default_layer == "features" and not loaded.model.training
    assert {s.name: s.available for s in available_models()}["mobilenet_v3_large"]


def test_damaged_cached_weights_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V2
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / Path(weights.url).name).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="could not be loaded"):
        load_model("mobilenet_v3_large")
