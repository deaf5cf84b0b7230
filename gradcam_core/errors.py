"""Typed errors of the engine: each carries one clear sentence meant for the end user.

Every error the engine raises on purpose is a :class:`GradCamError`; all but the base also are ``ValueError``
(a bad value was given), so ``except ValueError`` keeps working. Example::

    try:
        explain("notes.txt")
    except GradCamError as err:
        print(err)                      # "The file is not a readable image (use PNG, JPEG, WebP, BMP or TIFF)."
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "GradCamError",
    "ImageError",
    "LayerError",
    "MethodError",
    "ModelError",
    "ModelUnavailableError",
    "RenderError",
    "TargetError",
    "TrustCheckError",
    "VolumeError",
]


class GradCamError(Exception):
    """Base class of every error the engine raises on purpose; ``str(err)`` is a user-facing sentence."""


class ImageError(GradCamError, ValueError):
    """The input is not an image we can safely decode (corrupt, truncated, empty, too large, unsupported)."""


class ModelError(GradCamError, ValueError):
    """A model name, architecture or weights file is wrong, or the model does not return class scores."""


class ModelUnavailableError(ModelError):
    """The model exists but cannot be loaded on this machine (e.g. weights not cached and no network)."""


class LayerError(GradCamError, ValueError):
    """A target layer name or module is unknown, not a feature map, or cannot change the class score."""


class TargetError(GradCamError, ValueError):
    """A class index or class name is not one of the model's categories."""


class MethodError(GradCamError, ValueError):
    """A CAM method name is not registered."""


class RenderError(GradCamError, ValueError):
    """A picture, heatmap or drawing setting (opacity, colour map, percentile) cannot be drawn."""


class TrustCheckError(GradCamError, ValueError):
    """A trust check got inputs it cannot measure (wrong shapes, an empty region, a map without heat)."""


class AuditError(GradCamError, ValueError):
    """An audit's source, settings or output folder cannot be used (no images, a manifest without paths...)."""


class VolumeError(GradCamError, ValueError):
    """A 3-D scan (NIfTI, DICOM series, enhanced DICOM, ``.npy``) or its heatmap cannot be read or written safely."""
