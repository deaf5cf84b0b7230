"""gradcam_core: faithful, fast, side-effect-free Grad-CAM for image classifiers.

Quick start::

    from gradcam_core import explain, overlay
    result = explain("cat.jpg")                 # built-in EfficientNet-Lite0, top-1 class
    picture = overlay(result.image, result.heatmap, alpha=0.5)
"""

from .cam import CamTrace, compute_cam, trace_cam
from .errors import GradCamError, ImageError, LayerError, ModelError, ModelUnavailableError, TargetError
from .explain import Explanation, explain, heatmap_from_map
from .imaging import load_image
from .layers import LayerInfo, candidate_layers, resolve_layer
from .methods import METHODS, CamMethod
from .models import DEFAULT_MODEL, MODELS, LoadedModel, ModelStatus, available_models, load_model
from .preprocess import Preprocessing, to_input
from .render import COLORMAPS, colorize, overlay
from .targets import Prediction, resolve_class, top_predictions
from . import teaching
from .teaching import CamSteps, cam_steps

__all__ = [
    "COLORMAPS",
    "DEFAULT_MODEL",
    "METHODS",
    "MODELS",
    "CamMethod",
    "CamSteps",
    "CamTrace",
    "Explanation",
    "GradCamError",
    "ImageError",
    "LayerError",
    "LayerInfo",
    "LoadedModel",
    "ModelError",
    "ModelStatus",
    "ModelUnavailableError",
    "Prediction",
    "Preprocessing",
    "TargetError",
    "available_models",
    "cam_steps",
    "candidate_layers",
    "colorize",
    "compute_cam",
    "explain",
    "heatmap_from_map",
    "load_image",
    "load_model",
    "overlay",
    "resolve_class",
    "resolve_layer",
    "teaching",
    "to_input",
    "top_predictions",
    "trace_cam",
]
