"""What the user picked: plain frozen values, read from the sidebar once per run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageInput:
    """An image file chosen by the user: an upload or a built-in sample.

    Attributes:
        name: What to call it on the page, e.g. ``"Cat"`` or ``"scan.png"``.
        data: The file's bytes, as uploaded or read from disk (decoded later, safely, by the engine).
        digest: SHA-256 of ``data``: the cache key of everything computed from this image.
    """

    name: str
    data: bytes = field(repr=False)
    digest: str

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> ImageInput:
        """Wrap ``data`` and hash it."""
        return cls(name=name, data=data, digest=hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Settings:
    """Every choice that shapes the page.

    Attributes:
        image: The image to explain.
        model: Registry name of the model.
        layer: Dotted name of the target layer (``None`` while the model cannot be loaded).
        target: Class index to explain; ``None`` means the model's top prediction.
        method: Registry name of the CAM method.
        alpha: Heatmap opacity in the overlay, 0..1.
        colormap: Name of a colour map in ``gradcam_core.render.COLORMAPS``.
    """

    image: ImageInput
    model: str
    layer: str | None
    target: int | None
    method: str
    alpha: float
    colormap: str
