"""Typed errors of the engine: each carries one clear sentence meant for the end user."""

from __future__ import annotations

__all__ = [
    "GradCamError",
    "ImageError",
    "ModelError",
    "ModelUnavailableError",
    "LayerError",
    "TargetError",
]


class GradCamError(Exception):
    """Base class of every error the engine raises on purpose; ``str(err)`` is a user-facing sentence."""


class ImageError(GradCamError, ValueError):
    """The input is not an image we can safely decode (corrupt, truncated, empty, too large, unsupported)."""


class ModelError(GradCamError, ValueError):
    """A model name, architecture or weights file is wrong."""


class ModelUnavailableError(ModelError):
    """The model exists but cannot be loaded on this machine (e.g. weights not cached and no network)."""


class LayerError(GradCamError, ValueError):
    """A target layer name or module is unknown, not a feature map, or cannot change the class score."""


class TargetError(GradCamError, ValueError):
    """A class index or class name is not one of the model's categories."""
