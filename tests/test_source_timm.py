"""The timm source: a timm architecture by name + the user's weights, explained exactly as the network built directly.

Random seeded weights only (``pretrained=False``, nothing downloaded); transformers at a 64-pixel input.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models import register_model
from PIL import Image
from safetensors.torch import save, save_file
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from gradcam_core import ModelError, compute_cam, explain, to_input
from gradcam_core.layers import last_feature_map
from gradcam_core.preprocess import IMAGENET_MEAN
from gradcam_core.sources import SOURCES, ModelRequest, load_user_model

CHELSEA = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
SMALL = 64  # input side of every test model
TINY = {  # timm's smallest Swin and BEiT have 28 M and 86 M parameters: the same classes with a few channels
    "gradcam_test_swin": (
        "swin_tiny_patch4_window7_224", {"embed_dim": 24, "depths": (1,) * 4, "num_heads": (1,) * 4, "window_size": 2}
    ),
    "gradcam_test_beit": ("beit_base_patch16_224", {"embed_dim": 48, "depth": 2, "num_heads": 2}),
}


@pytest.fixture(scope="module", autouse=True)
def _tiny_architectures() -> None:
    """Register the tiny variants under their own names (with the base's pretrained_cfg), like any timm name."""
    for name, (base, settings) in TINY.items():
        if name not in timm.list_models():

            def build(pretrained: bool = False, *, _base: str = base, _settings: dict = settings, **kwargs):
                kwargs.pop("pretrained_cfg", None)
                kwargs.pop("pretrained_cfg_overlay", None)
                return timm.create_model(_base, pretrained=False, **_settings, **kwargs)

            build.__name__ = name
            register_model(build)


def _timm(name: str, *, in_chans: int = 3, **kwargs: object) -> nn.Module:
    """A seeded random-weight timm network with 3 classes, as a user would have fine-tuned it."""
    torch.manual_seed(1)
    return timm.create_model(name, pretrained=False, num_classes=3, in_chans=in_chans, **kwargs).eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _timm("resnet18")


@pytest.fixture(scope="module")
def resnet_file(resnet: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timm") / "cells.safetensors"
    save_file(resnet.state_dict(), path)
    return path


def _refusal(request: ModelRequest) -> str:
    """The one-sentence message of the ModelError the timm source raises for ``request``."""
    with pytest.raises(ModelError) as info:
        load_user_model("timm", request)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and not re.search(r"[.?!]\s+[A-Z]", message), message
    return message


def _hand_cam(model: nn.Module, inputs: Tensor, module: nn.Module, as_map, method: str) -> Tensor:
    """Grad-CAM / HiResCAM of the top class with plain autograd, the layer's output laid out by ``as_map``."""
    kept: list[Tensor] = []
    handle = module.register_forward_hook(lambda mod, args, out: kept.append(out))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    score = logits[0, logits[0].argmax()]
    (gradient,) = torch.autograd.grad(score, kept[0])
    activation, gradient = as_map(kept[0].detach())[0], as_map(gradient)[0]
    weights = gradient.mean(dim=(1, 2), keepdim=True) if method == "gradcam" else gradient
    return torch.relu((weights * activation).sum(0))


def _tokens(prefix: int, side: int):
    return lambda t: t[:, prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)


FAITHFUL = {  # name: (build kwargs, the default layer, its output as an (N, C, h, w) map)
    "resnet18": ({}, "layer4", lambda t: t),
    "vit_tiny_patch16_224": ({"img_size": SMALL}, "blocks.11.norm1", _tokens(1, SMALL // 16)),
    "gradcam_test_swin": ({"img_size": SMALL}, "norm", lambda t: t.permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("name", FAITHFUL)
def test_explanations_equal_the_directly_built_network(name) -> None:
    kwargs, layer, as_map = FAITHFUL[name]
    reference = _timm(name, **kwargs)
    loaded = load_user_model("timm", ModelRequest(weights=save(reference.state_dict()), architecture=name,
                                                  input_size=SMALL))
    assert not loaded.model.training and loaded.default_layer == layer and loaded.categories[2] == "class 2"
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    image = Image.open(CHELSEA).convert("RGB")
    inputs = to_input(image, loaded.preprocessing)
    for method in ("gradcam", "hirescam"):
        result = explain(CHELSEA, loaded, layer=layer, method=method)
        expected = compute_cam(reference, inputs, layer, method=method)[0].numpy()
        by_hand = _hand_cam(reference, inputs, reference.get_submodule(layer), as_map, method).numpy()
        assert result.raw_map.shape == expected.shape == by_hand.shape and result.raw_map.max() > 0
        np.testing.assert_allclose(result.raw_map, expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(result.raw_map, by_hand, atol=1e-5, rtol=0)


FAMILIES = {  # name: (build kwargs, square input)
    "efficientnet_b0": ({}, False),
    "convnext_atto": ({}, False),
    "regnetx_002": ({}, False),
    "mobilenetv3_small_050": ({}, False),
    "deit_tiny_distilled_patch16_224": ({"img_size": SMALL}, True),
    "eva02_tiny_patch14_224": ({"img_size": 56}, True),
    "gradcam_test_beit": ({"img_size": SMALL}, True),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_defaults_to_its_last_feature_map(name) -> None:
    kwargs, square = FAMILIES[name]
    size = kwargs.get("img_size", SMALL)
    loaded = load_user_model(
        "timm", ModelRequest(weights=save(_timm(name, **kwargs).state_dict()), architecture=name, input_size=size)
    )
    names = [info.name for info in loaded.layers]
    default = loaded.layers[names.index(loaded.default_layer)]
    assert loaded.default_layer == last_feature_map(loaded.layers)
    assert default.shape[1] * default.shape[2] > 1 and names.index(default.name) >= len(names) - 5
    assert loaded.preprocessing.keep_aspect is not square and loaded.preprocessing.size == size
    assert (default.layout == "tokens") is square
    result = explain(CHELSEA, loaded)
    assert result.target.index == result.predictions[0].index and result.strength > 0


def test_preprocessing_from_the_config_unless_overridden(resnet_file) -> None:
    loaded = load_user_model("timm", ModelRequest(weights=resnet_file, architecture="resnet18"))
    prep = loaded.preprocessing
    assert (prep.size, prep.mean, prep.interpolation, prep.keep_aspect) == (
        224, IMAGENET_MEAN, InterpolationMode.BICUBIC, True
    )
    assert loaded.name == "cells" and loaded.title == "resnet18 (cells.safetensors)"
    tagged = load_user_model("timm", ModelRequest(weights=resnet_file, architecture=" ResNet18.TV_in1k "))
    assert tagged.preprocessing.interpolation == InterpolationMode.BILINEAR  # that tag's own config
    custom = load_user_model(
        "timm",
        ModelRequest(weights=resnet_file.read_bytes(), architecture="resnet18", labels=["cat", "dog", "bird"],
                     input_size=96, mean=[0.5], std=(0.2, 0.3, 0.4), file_name="up.pt", name="mine"),
    )
    assert custom.preprocessing.size == 96 and custom.preprocessing.mean == (0.5, 0.5, 0.5)
    assert custom.preprocessing.std == (0.2, 0.3, 0.4) and custom.categories == ("cat", "dog", "bird")
    assert custom.name == "mine" and custom.title == "resnet18 (up.pt)" and custom.weights_file is None


def test_grayscale_weights_and_pt_checkpoints(tmp_path) -> None:
    gray = _timm("resnet18", in_chans=1)
    path = tmp_path / "xray.pt"
    torch.save({"state_dict": gray.state_dict(), "epoch": 4}, path)
    loaded = load_user_model("timm", ModelRequest(weights=path, architecture="resnet18", input_size=SMALL))
    assert loaded.preprocessing.channels == 1 and loaded.preprocessing.grayscale
    assert loaded.preprocessing.mean == (pytest.approx(sum(IMAGENET_MEAN) / 3),)
    assert explain(CHELSEA, loaded).raw_map.shape == (2, 3)


def test_refusals_are_one_sentence(resnet, resnet_file, tmp_path) -> None:
    assert "Name the timm architecture" in _refusal(ModelRequest(weights=resnet_file))
    assert "did you mean resnet18" in _refusal(ModelRequest(weights=resnet_file, architecture="resnet_18"))
    assert "no pretrained tag 'nope'" in _refusal(ModelRequest(weights=resnet_file, architecture="resnet18.nope"))
    message = _refusal(ModelRequest(weights=resnet_file, architecture="resnet34"))
    assert "do not fit resnet34" in message and "missing" in message and "unexpected" not in message
    convnext = save(_timm("convnext_atto").state_dict())
    assert "no classifier tensor 'fc.weight'" in _refusal(ModelRequest(weights=convnext, architecture="resnet18"))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": resnet.state_dict(), "args": argparse.Namespace(lr=0.1)}, unsafe)
    assert "never unpickled" in _refusal(ModelRequest(weights=unsafe, architecture="resnet18"))
    labels = _refusal(ModelRequest(weights=resnet_file, architecture="resnet18", labels=["cat", "dog"]))
    assert labels == "The labels list has 2 names but the model has 3 outputs."
    assert "from 32 to 2048" in _refusal(ModelRequest(weights=resnet_file, architecture="resnet18", input_size=8))
    four = save(_timm("resnet18", in_chans=4).state_dict())
    assert "4 input channels" in _refusal(ModelRequest(weights=four, architecture="resnet18"))
    assert "neither safetensors" in _refusal(ModelRequest(weights=b"not weights", architecture="resnet18"))


def test_registry_entry() -> None:
    source = SOURCES["timm"]
    assert (source.module, source.needs_architecture, source.needs_labels) == ("source_timm", True, False)
    assert source.suffixes == (".safetensors", ".pt", ".pth") and source.files.endswith(".")
