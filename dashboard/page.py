"""What every tab is drawn from: one ``Page`` with the settings, the model, the result and the pictures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcam_core import LoadedModel

from . import cache
from .cache import Result
from .settings import ImageInput, Settings


@dataclass(frozen=True)
class Page:
    """The explanation on screen and everything a tab needs to draw it.

    Attributes:
        settings: What the sidebar asks for.
        model: The model explained.
        result: The cached explanation for ``settings``.
        picture: The image shrunk for the browser (read-only, shared).
        size: ``(width, height)`` of the full-resolution image.
        uploads: Every image the user uploaded (the Gallery shows them all).

    Example::

        page = Page(settings, model, cache.explain(settings, model), shown, (451, 300), uploads)
        compare.render(page)
    """

    settings: Settings
    model: LoadedModel
    result: Result
    picture: np.ndarray
    size: tuple[int, int]
    uploads: tuple[ImageInput, ...] = ()

    def full_picture(self) -> np.ndarray:
        """The image at full resolution (read-only, shared; for downloads)."""
        return cache.decode_image(self.settings.image.digest, self.settings.image.data)
