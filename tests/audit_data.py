"""A constructed shortcut for the audit tests: a colour-detector network that keys on a corner watermark.

The network has three 4x4-patch colour detectors (magenta, blue, green) feeding a global average pool and a
linear head. Class ``horse`` reads the blue object a little and the magenta watermark a lot; class ``control``
reads the green object. Half of the horse pictures carry a magenta watermark in the top-left corner (as the
copyright tag on PASCAL VOC's horses that SpRAy found), so the model has two strategies for ``horse`` and the
watermark one is a shortcut; ``control`` pictures are clean.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from gradcam_core import Preprocessing, assemble_model

SIZE = 64
WATERMARK = 10  # pixels, top-left corner
CLASSES = ("horse", "control")


def watermark_net() -> nn.Sequential:
    """Fixed-weight detectors: channel 0 magenta, 1 blue, 2 green (each a 4x4 patch average, thresholded)."""
    detect = nn.Conv2d(3, 3, kernel_size=4, stride=4)
    colour = torch.tensor([[1.0, -2.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])  # (out, RGB)
    with torch.no_grad():
        detect.weight.copy_(colour[:, :, None, None].expand(3, 3, 4, 4) / 16)
        detect.bias.copy_(torch.tensor([-1.2, -0.5, -0.5]))
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[8.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        head.bias.zero_()
    modules = OrderedDict(detect=detect, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=head)
    return nn.Sequential(modules).eval()


def watermark_model_factory() -> functools.partial:
    """A picklable function of no arguments building the ``LoadedModel`` (what Ray actors receive)."""
    preprocessing = Preprocessing(size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), keep_aspect=False)
    return functools.partial(
        assemble_model, watermark_net(), CLASSES, preprocessing, name="watermark-net", title="Watermark net"
    )


def picture(colour: tuple[int, int, int], rng: np.random.Generator, *, watermark: bool) -> Image.Image:
    """A grey picture with a disc of ``colour`` near the centre, and the magenta watermark if asked."""
    pixels = np.clip(rng.normal(128, 6, (SIZE, SIZE, 3)), 0, 255)
    cy, cx = SIZE / 2 + rng.integers(-4, 5, 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 11**2] = colour
    if watermark:
        pixels[:WATERMARK, :WATERMARK] = (255, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def write_dataset(root: Path, per_class: int = 12, seed: int = 0) -> dict[str, list[Path]]:
    """An ImageFolder of ``per_class`` horses (the first half watermarked) and controls; paths by kind."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, list[Path]] = {"watermarked": [], "clean_horse": [], "control": []}
    for label, colour in (("horse", (0, 0, 255)), ("control", (0, 255, 0))):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            marked = label == "horse" and index < per_class // 2
            path = root / label / f"{index:02d}.png"
            picture(colour, rng, watermark=marked).save(path)
            kinds["watermarked" if marked else "clean_horse" if label == "horse" else "control"].append(path)
    return kinds
