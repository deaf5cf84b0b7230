"""What the user picked: plain frozen values, read from the sidebar once per run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from gradcam_core import Objective

Target = int | Objective | None
"""What to explain: a class index, an engine objective (several classes together, a binary model's negative
side, a segmentation's region), or ``None`` for the model's default (its top prediction)."""


@dataclass(frozen=True)
class ImageInput:
    """An image file chosen by the user: an upload or a built-in sample.

    Attributes:
        name: What to call it on the page, e.g. ``"Cat"`` or ``"scan.png"``.
        data: The file's bytes, as uploaded or read from disk (decoded later, safely, by the engine).
        digest: SHA-256 of ``data``: the cache key of everything computed from this image.
        facts: Technical facts worth reporting, e.g. a DICOM file's modality and pixel spacing.
    """

    name: str
    data: bytes = field(repr=False)
    digest: str
    facts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_bytes(cls, name: str, data: bytes, facts: tuple[tuple[str, str], ...] = ()) -> ImageInput:
        """Wrap ``data`` and hash it."""
        return cls(name=name, data=data, digest=hashlib.sha256(data).hexdigest(), facts=facts)


@dataclass(frozen=True)
class OwnModel:
    """A model the user brought: its source, its file, class names, and how to feed it.

    Attributes mirror ``gradcam_core.ModelRequest`` (``architecture`` ``None``: recognised or held by the file;
    ``labels``, ``input_size``, ``mean`` and ``std`` ``None``: the model file's own); ``source`` is a key of
    ``gradcam_core.SOURCES``, ``weights_name`` the uploaded file's name and ``files_digest`` a SHA-256 of the
    uploaded files (computed once per upload).
    """

    architecture: str | None
    weights_name: str
    weights: bytes = field(repr=False)
    labels: bytes | None = field(repr=False)
    files_digest: str
    source: str = "torchvision"
    activation: str = "softmax"
    input_size: int | None = 224
    mean: tuple[float, ...] | None = (0.485, 0.456, 0.406)
    std: tuple[float, ...] | None = (0.229, 0.224, 0.225)
    grayscale: bool = False

    @property
    def key(self) -> str:
        """``"own-"`` and a hash of the files and options: same files and options, same key (and cached model)."""
        options = (self.files_digest, self.source, self.architecture, self.activation, self.input_size, self.mean,
                   self.std, self.grayscale)
        return f"own-{hashlib.sha256(repr(options).encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Settings:
    """Every choice that shapes the page.

    Attributes:
        image: The image to explain.
        model: Registry name of the model.
        layer: Dotted name of the target layer (``None`` while the model cannot be loaded).
        target: Class index or objective to explain (:data:`Target`); ``None`` means the model's top prediction.
        method: Registry name of the CAM method.
        alpha: Heatmap opacity in the overlay, 0..1.
        colormap: Name of a colour map in ``gradcam_core.render.COLORMAPS``.
        raw_units: Show the heatmap's colour bar in the map's raw values instead of 0..1 of its maximum.
        large: Draw the main panels for a wide screen (the sidebar collapsed on a projector).
    """

    image: ImageInput
    model: str
    layer: str | None
    target: Target
    method: str
    alpha: float
    colormap: str
    raw_units: bool = False
    large: bool = False
