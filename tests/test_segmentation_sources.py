"""Segmentation networks from files: torchvision FCN / DeepLabV3 / LR-ASPP weights recognised and built, MONAI
SegResNet by name and in a bundle; each loaded file gives the map of the network built directly (1e-5)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from monai.networks.nets import SegResNet
from torch import nn

from gradcam_core import ModelError, ModelRequest, explain, load_user_model, to_input
from gradcam_core.architectures import SEGMENTATION_ARCHITECTURES, matching_architectures
from gradcam_core.cam import trace_cam
from gradcam_core.objectives import model_output, predicted_mask
from tests.segmentation_models import bundle

CAT = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"
ORGANS = ("background", "organ", "tumour")


def _settled(model: nn.Module) -> nn.Module:
    """``model`` with each batch norm holding one random batch's statistics (so activations are not degenerate)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def _segmentation(arch: str, classes: int, **options: object) -> nn.Module:
    torch.manual_seed(0)
    return _settled(torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=classes,
                                                 **options))


def _same_maps(loaded, network: nn.Module, method: str = "gradcam") -> float:
    """The loaded model's map (its default layer and region) against the directly built network's; the peak."""
    found = explain(CAT, loaded, method=method, keep_trace=True)
    inputs = to_input(found.image, loaded.preprocessing)
    reference = trace_cam(network, inputs, loaded.default_layer_for(method), None, method)
    peak = float(reference.cam.max())
    assert peak > 1e-3  # a map with something in it
    np.testing.assert_allclose(found.raw_map, reference.cam[0].numpy(), rtol=0, atol=1e-5 * max(1.0, peak))
    with torch.no_grad():
        output = model_output(network(inputs))
    assert np.array_equal(found.region, predicted_mask(output, found.target.index)[0].numpy())
    assert np.array_equal(found.segmentation, output[0].argmax(0).numpy())
    return peak


@pytest.fixture(scope="module")
def lraspp() -> nn.Module:
    return _segmentation("lraspp_mobilenet_v3_large", 3)


def test_lraspp_weights_are_recognised_and_explained_like_the_network(lraspp) -> None:
    data = safetensors.torch.save(lraspp.state_dict())
    loaded = load_user_model("torchvision", ModelRequest(weights=data, labels=ORGANS, input_size=64,
                                                         file_name="organs.safetensors"))
    layers = {info.name: info for info in loaded.layers}
    print("default", loaded.default_layer, layers[loaded.default_layer].shape, "activated", loaded.activated_layer)
    assert loaded.segmentation and loaded.title == "lraspp_mobilenet_v3_large (organs.safetensors)"
    assert loaded.categories == ORGANS and loaded.default_layer == "classifier.cbr"
    assert layers["classifier.cbr"].shape == (128, 4, 4)  # the deepest map (stride 16), not class scores
    for method in ("gradcam", "hirescam"):
        print(method, "peak", _same_maps(loaded, lraspp, method))


def test_every_segmentation_architecture_is_recognised_with_or_without_its_auxiliary_head() -> None:
    for arch in SEGMENTATION_ARCHITECTURES:
        for aux in (False, True) if not arch.startswith("lraspp") else (False,):
            with torch.device("meta"):
                state = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=5,
                                                     **({"aux_loss": True} if aux else {})).state_dict()
            assert matching_architectures(state) == [arch], (arch, aux)


def test_an_auxiliary_head_is_loaded_then_dropped() -> None:
    network = _segmentation("deeplabv3_mobilenet_v3_large", 2, aux_loss=True)
    data = safetensors.torch.save(network.state_dict())
    assert any(key.startswith("aux_classifier.") for key in safetensors.torch.load(data))
    loaded = load_user_model("torchvision", ModelRequest(weights=data, labels=["sky", "ground"], input_size=64))
    assert loaded.segmentation and loaded.model.aux_classifier is None
    assert not any(info.name.startswith("aux_classifier") for info in loaded.layers)
    with torch.no_grad():
        assert set(loaded.model(torch.zeros(1, 3, 64, 64))) == {"out"}
    print("deeplabv3 default", loaded.default_layer, "peak", _same_maps(loaded, network))


@pytest.mark.parametrize(("classifier", "named", "head"), [
    ("mobilenet_v3_small", "lraspp_mobilenet_v3_large", "classifier.high_classifier.weight"),
    ("resnet18", "fcn_resnet50", "classifier.4.weight"),
])
def test_classifier_weights_named_as_a_segmentation_network_are_one_sentence(classifier, named, head) -> None:
    state = torchvision.models.get_model(classifier, weights=None, num_classes=3).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a .pt keeps the keys in order
    data, first = buffer.getvalue(), next(iter(state))
    with pytest.raises(ModelError) as info:
        load_user_model("torchvision", ModelRequest(weights=data, labels=ORGANS, architecture=named, input_size=64))
    assert str(info.value) == (
        f"The weights have no classifier tensor {head!r}, so they are not for {named} (their first key is "
        f"{first!r}); check the architecture name."
    )


# ------------------------------------------------------------------------------------------------------ MONAI

SEGRESNET = {"_target_": "SegResNet", "spatial_dims": 2, "in_channels": 3, "out_channels": 3, "init_filters": 8,
             "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


def test_a_segresnet_bundle_loads_as_a_segmentation_model() -> None:
    torch.manual_seed(0)
    network = SegResNet(**{key: value for key, value in SEGRESNET.items() if key != "_target_"}).eval()
    loaded = load_user_model("monai", ModelRequest(weights=bundle(SEGRESNET, network), labels=ORGANS, input_size=64))
    assert loaded.segmentation and loaded.categories == ORGANS and loaded.title.startswith("MONAI SegResNet")
    print("segresnet bundle default", loaded.default_layer, "peak", _same_maps(loaded, network))
    for method in ("gradcam", "layercam"):
        _same_maps(loaded, network, method)


def test_a_segresnet_by_name_reads_its_channels_and_classes_from_the_weights() -> None:
    torch.manual_seed(1)
    network = SegResNet(spatial_dims=2, in_channels=1, out_channels=2).eval()  # MONAI's default widths and blocks
    data = safetensors.torch.save(network.state_dict())
    loaded = load_user_model("monai", ModelRequest(weights=data, labels=["background", "lesion"],
                                                   architecture="SegResNet", input_size=64))
    assert loaded.segmentation and loaded.preprocessing.channels == 1 and len(loaded.categories) == 2
    print("segresnet by name default", loaded.default_layer, "peak", _same_maps(loaded, network))
    with pytest.raises(ModelError) as info:  # its classes are its last convolution's 2 outputs
        load_user_model("monai", ModelRequest(weights=data, labels=["a", "b", "c"], architecture="SegResNet",
                                              input_size=64))
    assert str(info.value) == "The labels list has 3 names but the model has 2 outputs."
