"""A tiny seeded MONAI UNet saved as a MONAI bundle, the segmentation model a user can give (CLI and dashboard);
``bundle`` saves any MONAI network so."""

from __future__ import annotations

import io
import json
import zipfile

import safetensors.torch
import torch
from monai.networks.nets import UNet

CLASSES = ("background", "organ", "tumour")
NETWORK_DEF = {
    "_target_": "UNet", "spatial_dims": 2, "in_channels": 3, "out_channels": len(CLASSES),
    "channels": [4, 8, 16], "strides": [2, 2],
}


def unet() -> UNet:
    """The bundle's network, seeded (``torch.manual_seed(0)``), in eval mode."""
    torch.manual_seed(0)
    arguments = {key: value for key, value in NETWORK_DEF.items() if key != "_target_"}
    return UNet(**arguments).eval()


def unet_bundle() -> bytes:
    """The bundle as a zip (``configs/inference.json`` + ``models/model.safetensors``), no class names in it."""
    return bundle(NETWORK_DEF, unet())


def bundle(network_def: dict, network: torch.nn.Module) -> bytes:
    """A MONAI bundle zip of ``network`` described by ``network_def`` (plain values), no class names in it."""
    folder = f"{network_def['_target_'].lower()}_bundle"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder}/configs/inference.json", json.dumps({"network_def": network_def}))
        archive.writestr(f"{folder}/models/model.safetensors", safetensors.torch.save(network.state_dict()))
    return buffer.getvalue()
