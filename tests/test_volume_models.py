"""3-D classifiers from the user's weights: seeded random networks saved, loaded as data, explained.

The map of ``explain_volume`` on the loaded model must equal Grad-CAM / an element-wise method computed by hand
(hooks and ``torch.autograd.grad``) on the very network that was saved. No pretrained 3-D weights exist offline.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from monai.networks import nets
from safetensors.torch import save
from torch import Tensor, nn
from torch.nn import functional as F

from gradcam_core import volume_models
from gradcam_core.errors import ModelError, TargetError, VolumeError
from gradcam_core.source_monai import NETWORKS, construct_network
from gradcam_core.volume_cam import explain_volume
from gradcam_core.volume_models import (
    VOLUME_ARCHITECTURES,
    VolumeModelRequest,
    VolumePreprocessing,
    load_volume_model,
    volume_input,
)
from gradcam_core.volumes import Volume

SCAN = Volume(
    voxels=np.random.default_rng(0).normal(40, 300, size=(20, 50, 40)).astype(np.float32),
    affine=np.diag([0.8, 0.8, 2.5, 1.0]),
    source_format="NumPy",
)


def _randomise_batch_norm(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial statistics, so a wrong load would show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _reference_map(model: nn.Module, inputs: Tensor, layer: str, target: int, method: str) -> np.ndarray:
    """Grad-CAM (channel means of the gradient) or LayerCAM (its positive part, voxel by voxel), by hand."""
    captured: list[Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        score = model(inputs)[0, target]
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(score, captured[0])
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True) if method == "gradcam" else torch.relu(gradient)
    return torch.relu((weights * captured[0]).sum(1))[0].detach().numpy()


def _check_round_trip(network: nn.Module, loaded, target: int) -> None:
    inputs = volume_input(SCAN, loaded.preprocessing)
    for method in ("gradcam", "layercam"):
        result = explain_volume(SCAN, loaded, target=target, method=method)
        expected = _reference_map(network, inputs, loaded.default_layer, target, method)
        assert result.raw_map.shape == expected.shape and expected.max() > 0
        np.testing.assert_allclose(result.raw_map, expected, rtol=1e-5, atol=1e-5 * expected.max())


def test_monai_densenet121_round_trip() -> None:
    torch.manual_seed(0)
    network = _randomise_batch_norm(nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2))
    request = VolumeModelRequest("monai:densenet121", save(network.state_dict()),
                                 VolumePreprocessing((32, 64, 64)), labels=b"normal\nnodule\n")
    loaded = load_volume_model(request)
    assert loaded.categories == ("normal", "nodule") and loaded.preprocessing.channels == 1
    assert loaded.default_layer == "class_layers.relu" and loaded.layers[-1] == "class_layers.relu"
    assert loaded.title == "MONAI DenseNet121 (3-D) (your weights)"
    _check_round_trip(network, loaded, 1)
    result = explain_volume(SCAN, loaded, target="Nodule", top_k=1)
    assert result.raw_map.shape == (1, 2, 2) and result.grid == (20, 50, 40) and result.input_size == (32, 64, 64)
    assert result.target.label == "nodule" and result.strength == pytest.approx(float(result.raw_map.max()))
    assert len(result.predictions) == 1 and result.layer == "class_layers.relu" and result.trace is None
    with pytest.raises(TargetError, match="No class is named 'tumour'"):
        explain_volume(SCAN, loaded, target="tumour")


def test_torchvision_r3d_18_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = _randomise_batch_norm(torchvision.models.video.r3d_18(num_classes=3))
    path = tmp_path / "r3d.pt"
    torch.save(network.state_dict(), path)
    loaded = load_volume_model(VolumeModelRequest("torchvision:r3d_18", path, VolumePreprocessing((8, 32, 32))))
    assert loaded.name == "r3d" and loaded.title == "torchvision R3D-18 (video ResNet) (r3d.pt)"
    assert loaded.categories == ("class 0", "class 1", "class 2") and loaded.preprocessing.channels == 3
    assert loaded.default_layer == "layer4" and loaded.activated_layer == "layer4"
    _check_round_trip(network, loaded, 2)
    # A one-channel scan is repeated on the three channels.
    inputs = volume_input(SCAN, loaded.preprocessing)
    torch.testing.assert_close(inputs[0, 2], inputs[0, 0])


def test_one_channel_video_resnet_gets_a_one_channel_stem() -> None:
    torch.manual_seed(2)
    network = torchvision.models.video.mc3_18(num_classes=2)
    network.stem[0] = nn.Conv3d(1, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
    network = _randomise_batch_norm(network)
    loaded = load_volume_model(VolumeModelRequest("torchvision:mc3_18", save(network.state_dict()),
                                                  VolumePreprocessing((8, 32, 32), "window", (40, 400))))
    assert loaded.preprocessing.channels == 1 and loaded.model.stem[0].in_channels == 1
    _check_round_trip(network, loaded, 0)


def test_refusals(tmp_path: Path) -> None:
    preprocessing = VolumePreprocessing((8, 32, 32))
    small = nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
                          block_config=(2, 2))
    with pytest.raises(ModelError, match="'monai:densenet999' is not a 3-D architecture offered here"):
        load_volume_model(VolumeModelRequest("monai:densenet999", save(small.state_dict()), preprocessing))
    with pytest.raises(ModelError, match="The weights do not fit the MONAI DenseNet121"):
        load_volume_model(VolumeModelRequest("monai:densenet121", save(small.state_dict()), preprocessing))
    two_d = nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict()
    with pytest.raises(ModelError, match=r"'features.conv0.weight' is \(64, 1, 7, 7\) in the weights but"):
        load_volume_model(VolumeModelRequest("monai:densenet121", save(two_d), preprocessing))
    with pytest.raises(ModelError, match="have no classifier 'fc.weight', so they are not for r3d_18"):
        load_volume_model(VolumeModelRequest("torchvision:r3d_18", save(small.state_dict()), preprocessing))
    with pytest.raises(ModelError, match="The labels file has 1 name but the model has 2 outputs"):
        load_volume_model(VolumeModelRequest("monai:densenet121", save(nets.DenseNet121(
            spatial_dims=3, in_channels=1, out_channels=2).state_dict()), preprocessing, labels=b"one\n"))
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"fc.weight": _Payload(marker)}, protocol=4)
    with pytest.raises(ModelError, match="never unpickled here"):
        load_volume_model(VolumeModelRequest("torchvision:r3d_18", evil, preprocessing))
    assert not marker.exists()
    with pytest.raises(ModelError, match=r"three whole numbers \(D, H, W\) from 1 to 1024"):
        VolumePreprocessing((64, 64))
    with pytest.raises(ModelError, match="A window needs a finite center and a positive width"):
        VolumePreprocessing((8, 8, 8), "window")


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_volume_input_resizes_the_whole_volume_slab_by_slab(monkeypatch) -> None:
    monkeypatch.setattr(volume_models, "_SLAB_BYTES", 3 * 50 * 40 * 4)  # 3 slices at a time: 7 slabs
    voxels = torch.from_numpy(SCAN.voxels.copy())[None, None]
    window = volume_input(SCAN, VolumePreprocessing((7, 24, 16), "window", (40, 400)))
    expected = F.interpolate(((voxels + 160) / 400).clamp(0, 1), size=(7, 24, 16), mode="trilinear")
    torch.testing.assert_close(window, expected, rtol=1e-5, atol=1e-6)
    zscore = volume_input(SCAN, VolumePreprocessing((7, 24, 16), channels=2))
    mean, std = SCAN.voxels.astype(np.float64).mean(), SCAN.voxels.astype(np.float64).std()
    expected = (F.interpolate(voxels, size=(7, 24, 16), mode="trilinear") - mean) / std
    assert zscore.shape == (1, 2, 7, 24, 16) and zscore.dtype == torch.float32
    torch.testing.assert_close(zscore, expected.expand(1, 2, -1, -1, -1), rtol=1e-5, atol=1e-5)
    flat = Volume(voxels=np.full((3, 4, 5), 7.0, np.float32), affine=np.eye(4), source_format="NumPy")
    assert volume_input(flat, VolumePreprocessing((2, 2, 2))).abs().max() == 0
    three = Volume(voxels=np.zeros((3, 4, 5, 6), np.float32), affine=np.eye(4), source_format="NumPy")
    with pytest.raises(VolumeError, match="The scan has 3 channels but the model takes 2; give a scan with 1 or 2."):
        volume_input(three, VolumePreprocessing((2, 2, 2), channels=2))


def test_every_offered_architecture_is_built_with_3d_layers() -> None:
    assert len(VOLUME_ARCHITECTURES) == 10
    for key in VOLUME_ARCHITECTURES:
        library, _, name = key.partition(":")
        with torch.device("meta"):
            if library == "monai":
                network = NETWORKS[name]
                model = construct_network(network.target, {**network.fixed, "spatial_dims": 3,
                                                                   network.channels: 1, network.classes: 2})
            else:
                model = getattr(torchvision.models.video, name)(num_classes=2)
        assert any(isinstance(module, nn.Conv3d) for module in model.modules()), key
