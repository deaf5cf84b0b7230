"""From an upright RGB image to the model's input tensor, without cropping anything away."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .errors import ModelError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "per_channel", "to_input"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input.

    The whole image is fed to the model: its shorter side is resized to ``size`` and its aspect ratio kept
    (up to ``max_aspect``; longer images are squeezed, never cropped), each side rounded to a multiple of
    ``multiple``. Convolutional classifiers pool globally, so they accept such inputs; a model that needs a
    fixed square input sets ``keep_aspect=False``.

    Attributes:
        size: Shorter side of the model input, in pixels (the weights' crop size, e.g. 224).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        interpolation: Resampling used to resize.
        keep_aspect: Keep the image's aspect ratio (True) or resize to ``size`` × ``size``.
        max_aspect: Largest aspect ratio kept.
        multiple: Input sides are rounded to a multiple of this.
        grayscale: Convert the image to grayscale (luminance) first; with ``channels=3`` it is repeated 3 times.
        channels: Input channels the model takes: 3, or 1 for a model whose first convolution is grayscale
            (then ``mean`` and ``std`` hold one value each).
    """

    size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    keep_aspect: bool = True
    max_aspect: float = 2.0
    multiple: int = 32
    grayscale: bool = False
    channels: int = 3

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """``(height, width)`` of the model input for an image of the given size."""
        if not self.keep_aspect:
            return self.size, self.size
        aspect = min(max(width, height) / max(1, min(width, height)), self.max_aspect)
        short, long_ = self.size, self.size * aspect
        rounded_short = max(self.multiple, round(short / self.multiple) * self.multiple)
        rounded_long = max(self.multiple, round(long_ / self.multiple) * self.multiple)
        return (rounded_long, rounded_short) if height > width else (rounded_short, rounded_long)


def to_input(image: Image.Image, prep: Preprocessing) -> Tensor:
    """Resize and normalise an RGB image into a ``(1, channels, h, w)`` float tensor (grayscale if asked).

    Example: ``to_input(load_image("cat.jpg"), Preprocessing(size=224)).shape  # (1, 3, 224, 288)``.
    """
    height, width = prep.input_size(*image.size)
    if prep.grayscale or prep.channels == 1:
        image = image.convert("L")
    resized = TF.resize(image, [height, width], interpolation=prep.interpolation, antialias=True)
    tensor = TF.to_tensor(resized)
    if tensor.shape[0] != prep.channels:  # a grayscale image for a 3-channel model
        tensor = tensor.expand(prep.channels, -1, -1)
    tensor = TF.normalize(tensor, list(prep.mean), list(prep.std))
    return tensor.unsqueeze(0).to(torch.float32)


def per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    """Normalisation ``values`` (the ``what``: ``"mean"`` or ``"standard deviation"``), one per input channel.

    One value is repeated; three RGB values for a 1-channel model are averaged. Example:
    ``per_channel([0.5], 3, "mean")  # (0.5, 0.5, 0.5)``.

    Raises:
        ModelError: not numbers, the wrong count, not finite, or a standard deviation that is not positive.
    """
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelError(f"The normalisation {what} must be numbers, one per channel.") from None
    if len(numbers) == 1:
        numbers = numbers * channels
    elif len(numbers) == 3 and channels == 1:
        numbers = (sum(numbers) / 3,)  # RGB statistics for a grayscale model: their average
    if len(numbers) != channels:
        raise ModelError(f"The normalisation {what} has {len(numbers)} values; give 1 or {channels}.")
    if not all(math.isfinite(v) for v in numbers) or (what != "mean" and min(numbers) <= 0):
        raise ModelError(f"The normalisation {what} must be finite{'' if what == 'mean' else ' and positive'}.")
    return numbers
