"""Tiny fixed-weight models whose Grad-CAM maps can be computed by hand."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

# Two 2x2 feature maps, fed through an identity 1x1 convolution (the target layer, named "layer").
A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[4.0, 3.0], [2.0, 1.0]]


def feature_input(*maps: list[list[float]]) -> Tensor:
    """A (1, K, h, w) input whose target-layer activations are exactly ``maps``."""
    return torch.tensor([maps])


class HalfSquaredSum(nn.Module):
    """One class, y = sum(A^0 ** 2) / 2, so dy/dA^0 = A^0 and dy/dA^1 = 0."""

    def forward(self, x: Tensor) -> Tensor:
        return (x[:, :1] ** 2).sum(dim=(1, 2, 3))[:, None] / 2


def identity_conv(channels: int = 2) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
    return conv


def linear_head(weight: list[list[float]]) -> nn.Linear:
    fc = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        fc.weight.copy_(torch.tensor(weight))
        fc.bias.zero_()
    return fc


def gap_linear_model(weight: list[list[float]], *, inplace_relu: bool = False) -> nn.Sequential:
    """layer (identity conv) -> [in-place ReLU] -> global average pool -> linear(weight)."""
    modules: OrderedDict[str, nn.Module] = OrderedDict(layer=identity_conv())
    if inplace_relu:
        modules["act"] = nn.ReLU(inplace=True)
    modules.update(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=linear_head(weight))
    return nn.Sequential(modules).eval()


def squared_sum_model() -> nn.Sequential:
    """layer (identity conv) -> y = sum(A^0 ** 2) / 2."""
    return nn.Sequential(OrderedDict(layer=identity_conv(), head=HalfSquaredSum())).eval()
