"""A tiny seeded MONAI UNet saved as a MONAI bundle, the segmentation model a user can give (CLI and dashboard)."""

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
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("unet_bundle/configs/inference.json", json.dumps({"network_def": NETWORK_DEF}))
        archive.writestr("unet_bundle/models/model.safetensors", safetensors.torch.save(unet().state_dict()))
    return buffer.getvalue()
