"""What a tab can offer for the explanation on screen, whatever the kind of model: the classes it can explain,
the target that asks for one, the methods it can run, and one sentence when a view cannot be offered.

A segmentation model explains a class over the region it predicts for it, so only the classes it predicts
somewhere in the image can be explained; a gradient-free model (or an image its PyTorch conversion cannot be
trusted on, ``ExplanationSummary.notice``) only takes the methods without gradients::

    indices = explainable_classes(page.result, page.model)     # segmentation: the classes in its mask
    variant = replace(page.settings, target=class_target(page.settings, page.result, indices[0]))
"""

from __future__ import annotations

import numpy as np

import gradcam_core as core
from gradcam_core import ExplanationSummary, LoadedModel, Prediction

from .settings import Settings, Target
from .text import plain

__all__ = [
    "class_target",
    "explainable",
    "explainable_classes",
    "methods",
    "needs_gradients",
    "needs_one_class",
]


def explainable_classes(result: ExplanationSummary, model: LoadedModel) -> list[int]:
    """Every class index a class target can explain: all of the model's, or for a segmentation the classes it
    predicts somewhere in this image (``[0, 2]``)."""
    if result.segmentation is None:
        return list(range(len(model.categories)))
    return [int(index) for index in np.unique(result.segmentation)]


def explainable(result: ExplanationSummary, model: LoadedModel) -> tuple[Prediction, ...]:
    """``result.predictions`` that a class target can explain (see :func:`explainable_classes`), best first."""
    present = set(explainable_classes(result, model))
    return tuple(p for p in result.predictions if p.index in present)


def class_target(settings: Settings, result: ExplanationSummary, index: int) -> Target:
    """The target that explains class ``index`` (for a segmentation, its predicted region): ``None`` when that is
    what the model explains by default for this image, so the explanation is shared, else ``index``."""
    if settings.target is None:
        default = result.target.index
    else:  # a segmentation's default is not known without explaining it: always name the class
        default = None if result.segmentation is not None else result.predictions[0].index
    return None if index == default else index


def methods(model: LoadedModel, result: ExplanationSummary) -> list[str]:
    """The methods that can explain this model on this image: ``LoadedModel.methods``, or only those without
    gradients when its PyTorch conversion cannot be trusted on the image (``result.notice``)."""
    if result.notice is None:
        return list(model.methods)
    return [name for name in model.methods if not core.METHODS[name].needs_gradients]


def needs_gradients(what: str, model: LoadedModel, result: ExplanationSummary) -> str | None:
    """One sentence when ``what`` (e.g. ``"Guided Grad-CAM"``) cannot run because it needs the model's gradients,
    which a gradient-free model cannot give (or cannot be trusted to give on this image); else ``None``."""
    if model.gradient_free is not None:
        return f"{what} needs the model's gradients, which this model cannot give (it runs through onnxruntime)."
    if result.notice is not None:
        return f"{what} needs the model's gradients, which cannot be trusted on this image (see the note above)."
    return None


def needs_one_class(what: str, model: LoadedModel, settings: Settings, result: ExplanationSummary) -> str | None:
    """One sentence when ``what`` (Guided Grad-CAM) follows a single class's score over the whole image and the
    map on screen explains something else (a segmentation's region, several classes together, a binary model's
    negative side); else ``None``. The trust checks follow any objective, so they never need it."""
    if model.segmentation:
        return (f"{what} follows one class's score over the whole image, so it is not available for a "
                "segmentation model's region.")
    if isinstance(settings.target, core.Objective):
        return f"{what} follows one class's score, so it is not available for {plain(result.target.label)}."
    return None
