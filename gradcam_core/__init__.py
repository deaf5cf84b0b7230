"""gradcam_core: faithful, fast, side-effect-free Grad-CAM for image classifiers.

Quick start::

    from gradcam_core import explain, overlay
    result = explain("cat.jpg")                 # built-in EfficientNet-Lite0, top-1 class
    picture = overlay(result.image, result.heatmap, alpha=0.5)
"""

from importlib.metadata import version

__version__ = version("gradcam-dashboard")
"""The installed project's version (kept in pyproject.toml only)."""

from .cam import CamTrace, compute_cam, trace_cam
from .assembly import assemble_model
from .custom import custom_architectures, load_custom_model
from .sources import SOURCES, ModelRequest, ModelSource, load_user_model
from .dicom import DicomImage, Window, is_dicom, read_dicom, render_frame
from .errors import (
    GradCamError,
    ImageError,
    LayerError,
    MethodError,
    ModelError,
    ModelUnavailableError,
    RenderError,
    TargetError,
    TrustCheckError,
)
from .explain import Explanation, ExplanationSummary, explain, heatmap_from_map
from .files import read_bounded
from .formats import DICOM_SUFFIXES, IMAGE_SUFFIXES, UPLOAD_SUFFIXES, image_format_list
from .guided import GUIDED_ACTIVATIONS, GuidedExplanation, explain_guided, guide, guided_backprop, guided_gradcam
from .imaging import load_image
from .layers import LayerInfo, candidate_layers, resolve_layer
from .methods import METHODS, CamMethod
from .models import DEFAULT_MODEL, MODELS, LoadedModel, ModelStatus, available_models, load_model, shared_model
from .preprocess import Preprocessing, to_input
from .render import COLORMAPS, colorize, gradient_magnitude, gradient_to_rgb, overlay
from .report import build_report, weights_sha256
from .objectives import BinaryLogit, ClassScore, Objective, RegionScore, WeightedClasses, predicted_mask
from .targets import Prediction, resolve_class, top_predictions
from .units import format_size
from . import teaching
from .teaching import CamSteps, cam_steps
from . import trust
from .trust import (
    FaithfulnessCurves,
    RandomizedModel,
    RegionCheck,
    SanityCheck,
    deletion_insertion,
    randomized_copy,
    region_check,
    sanity_check,
)

__all__ = [
    "BinaryLogit",
    "ClassScore",
    "Objective",
    "RegionScore",
    "WeightedClasses",
    "predicted_mask",
    "SOURCES",
    "ModelRequest",
    "ModelSource",
    "assemble_model",
    "load_user_model",
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "UPLOAD_SUFFIXES",
    "image_format_list",
    "MethodError",
    "RenderError",
    "format_size",
    "read_bounded",
    "shared_model",
    "GUIDED_ACTIVATIONS",
    "GuidedExplanation",
    "explain_guided",
    "gradient_magnitude",
    "gradient_to_rgb",
    "guide",
    "guided_backprop",
    "guided_gradcam",
    "FaithfulnessCurves",
    "RandomizedModel",
    "RegionCheck",
    "SanityCheck",
    "TrustCheckError",
    "deletion_insertion",
    "randomized_copy",
    "region_check",
    "sanity_check",
    "trust",
    "DicomImage",
    "Window",
    "__version__",
    "build_report",
    "is_dicom",
    "read_dicom",
    "render_frame",
    "weights_sha256",
    "COLORMAPS",
    "DEFAULT_MODEL",
    "METHODS",
    "MODELS",
    "CamMethod",
    "CamSteps",
    "CamTrace",
    "Explanation",
    "ExplanationSummary",
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
    "custom_architectures",
    "explain",
    "heatmap_from_map",
    "load_custom_model",
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
