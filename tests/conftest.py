"""Shared fixtures: the real offline model (loaded once) and paths to the sample images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def lite0():
    """The built-in EfficientNet-Lite0 with its real ImageNet weights, shared by the whole session."""
    from gradcam_core import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
