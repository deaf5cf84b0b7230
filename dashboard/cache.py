"""Cached computations: one model per server process, decoded images and explanations per content hash.

Only the model call is cached here. Colouring and blending are cheap and run on every rerun, so moving the
opacity slider or changing the colour map never reaches the model.

Explanations live in ``SharedResults`` (read-only, no copy per hit) rather than ``st.cache_data``: a slow method
draws a progress bar, and Streamlit cannot replay an element drawn inside a cached function on a later hit.
An explanation keeps the small layer-resolution map, not a full-resolution heatmap (46 MB for 12 megapixels);
heatmaps are made at the size that is needed, when it is needed (``Result.heatmap_at``). Decoded images are
shared read-only through ``st.cache_resource``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st
import torch
from PIL import Image

import gradcam_core as core
from gradcam_core import CamSteps, LoadedModel, Prediction

from . import choices
from .pictures import shrink
from .background import BackgroundWork, Progress
from .progress import computed_in_background
from .settings import ImageInput, OwnModel, Settings, Target
from .shared_results import SharedResults
from .tiles import keep_tiles

TOP_K = 5
DISPLAY_SIDE = 1024
"""Longest side of the pictures sent to the browser (downloads stay at full resolution)."""
UNNAMED_WEIGHTS = "uploaded model"
"""What the shared copy of a user's model calls its file (each session puts its own file name in its place)."""
RESULT_ENTRIES = 128
"""Explanations kept for all sessions (a few hundred KB each, at most about 2.5 MB: a layer-sized map and the
teaching tiles, see ``ACTIVATION_BUDGET``)."""
RESULT_TTL_SECONDS = 3600
WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Threads for slow work shared by all sessions; more jobs wait their turn (the bar says so)."""


@dataclass(frozen=True, eq=False)
class Result(core.ExplanationSummary):
    """What the dashboard keeps of an explanation: the engine's pixel-free summary (plain numbers and arrays, no
    tensors, no image) plus ``steps``, the intermediates of the same computation for the teaching view (see
    ``tiles.keep_tiles``). ``core.Explanation.of(result, picture)`` gives the engine's full explanation back.
    """

    steps: CamSteps | None = None

    def explanation(self, image: np.ndarray) -> core.Explanation:
        """The engine's ``Explanation`` of ``image`` (the full-resolution picture this result explains)."""
        return core.Explanation.of(self, Image.fromarray(image))


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def load_model(name: str) -> LoadedModel:
    """The registered model ``name``, loaded once per server process and shared by every session."""
    return core.load_model(name)


def own_model(own: OwnModel) -> LoadedModel:
    """The user's model, titled with this session's file name (the shared cached model carries no name)."""
    shared = load_own_model(own.key, own)
    return replace(shared, title=shared.title.replace(UNNAMED_WEIGHTS, own.weights_name))


@st.cache_resource(show_spinner="Loading your model…", max_entries=2, ttl=3600)
def load_own_model(key: str, _own: OwnModel) -> LoadedModel:
    """The user's model, loaded once per content ``key`` (``OwnModel.key``) and shared like the built-in ones.

    Shared between sessions, so it holds nothing of the session that uploaded it: not the file's name.
    """
    request = core.ModelRequest(
        weights=_own.weights,
        labels=_own.labels,
        architecture=_own.architecture,
        activation=_own.activation,
        input_size=_own.input_size,
        mean=_own.mean,
        std=_own.std,
        grayscale=_own.grayscale,
        name=key,
        file_name=UNNAMED_WEIGHTS,
    )
    return core.load_user_model(_own.source, request)


def forward_seconds(model: LoadedModel) -> float:
    """Seconds one image takes through ``model`` on this server (measured once per model)."""
    return _forward_seconds(model.name, model)


@st.cache_resource(show_spinner=False, max_entries=8)
def _forward_seconds(name: str, _model: LoadedModel) -> float:
    """The median of five no-grad forwards of ``_model`` (named ``name``) on a 3:2 input of its size, like a photo."""
    size = _model.preprocessing.size
    probe = torch.zeros(1, getattr(_model.preprocessing, "channels", 3), size, size * 3 // 2)
    times = []
    with torch.no_grad():
        for _ in range(5):
            start = time.perf_counter()
            _model.model(probe)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


@st.cache_resource(show_spinner="Reading the image…", max_entries=8, ttl=3600)
def decode_image(digest: str, _data: bytes) -> np.ndarray:
    """The image file ``_data`` (identified by its SHA-256 ``digest``) as an upright uint8 RGB array.

    Shared by every session without copying, hence read-only.
    """
    return _read_only(np.asarray(core.load_image(_data)))


@st.cache_resource(show_spinner=False, max_entries=64, ttl=3600)
def display_image(digest: str, _data: bytes) -> np.ndarray:
    """The decoded image shrunk to at most ``DISPLAY_SIDE`` pixels on its long side, for the browser."""
    return _read_only(np.array(shrink(decode_image(digest, _data), DISPLAY_SIDE)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@st.cache_resource(show_spinner=False)
def shared_results() -> SharedResults[Result]:
    """The explanations of every session, keyed by image content and settings (one store per server process)."""
    return SharedResults(max_entries=RESULT_ENTRIES, ttl=RESULT_TTL_SECONDS)


@st.cache_resource(show_spinner=False)
def worker_pool() -> ThreadPoolExecutor:
    """The threads that run slow work for every session (one per core: more would only compete)."""
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="gradcam-work")


@st.cache_resource(show_spinner=False)
def explanation_work() -> BackgroundWork[Result]:
    """Slow explanations (Score-CAM) in flight, finished ones kept in ``shared_results``."""
    return BackgroundWork(shared_results(), worker_pool())


def compute_explanation(
    picture: Image.Image,
    model: LoadedModel,
    layer: str | None,
    target: Target,
    method: str,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Run ``model`` once on ``picture`` for this layer, class and method (no caching, no page element: it may
    run on a worker thread)."""
    found = core.explain(
        picture, model, layer=layer, target=target, method=method, top_k=TOP_K, keep_trace=True, progress=progress
    )
    return read_only(Result(**vars(found.summary()), steps=keep_tiles(core.cam_steps(found.trace))))


def target_key(target: Target) -> object:
    """``target`` as a cache key: itself (class indices and the objectives are values), or for a region its
    class and a digest of its mask (a tensor compares by identity)."""
    if isinstance(target, core.RegionScore):
        mask = target.mask.numpy()
        return ("region", target.index, mask.shape, hashlib.sha256(np.packbits(mask)).hexdigest())
    return target


def read_only(result: Result) -> Result:
    """``result`` with every array it holds made read-only (results are shared between sessions)."""
    arrays = [result.raw_map]
    if result.steps is not None:
        arrays += [value for value in vars(result.steps).values() if isinstance(value, np.ndarray)]
    for array in arrays:
        array.flags.writeable = False
    return result


def default_method(model: LoadedModel | None = None) -> str:
    """The method explained before the user picks one: Grad-CAM when registered and ``model`` allows it, else
    the first fast method ``model`` allows (Eigen-CAM for a gradient-free model, see ``LoadedModel.methods``)."""
    names = model.methods if model is not None else tuple(core.METHODS)
    fast = [name for name in names if not core.METHODS[name].forward_passes]
    return "gradcam" if "gradcam" in names else (fast or list(names))[0]


def predictions(image: ImageInput, model: LoadedModel) -> tuple[Prediction, ...]:
    """The model's top classes for ``image`` (the default explanation's, which is kept for the page).

    For a segmentation model, only the classes it predicts somewhere in the image (those it can explain). When
    the model cannot be trusted with gradients on this image (``LoadedModel.check_output``), they come from
    the first fast gradient-free method instead, so the page still shows them and says which methods remain.
    """
    method = default_method(model)
    try:
        result = explained(image, model, model.default_layer_for(method), None, method)
    except core.MethodError:
        if not core.METHODS[method].needs_gradients:
            raise
        method = next(
            name for name, registered in core.METHODS.items()
            if not registered.needs_gradients and not registered.forward_passes
        )
        result = explained(image, model, model.default_layer_for(method), None, method)
    return choices.explainable(result, model)  # a segmentation: only the classes it predicts somewhere


def explain(
    settings: Settings, model: LoadedModel, *, place: str = "explanation", on_cancel: Callable[[], None] | None = None
) -> Result:
    """The explanation for the current settings (see ``explained``)."""
    return explained(
        settings.image, model, settings.layer, settings.target, settings.method, place=place, on_cancel=on_cancel
    )


def explained(
    image: ImageInput,
    model: LoadedModel,
    layer: str | None,
    target: Target,
    method: str,
    *,
    place: str = "explanation",
    on_cancel: Callable[[], None] | None = None,
) -> Result:
    """The explanation of ``image``, computed once per image content, model, layer, target and method.

    A slow method runs on a worker thread and shows a progress bar, with a Cancel button when ``on_cancel``
    (which should pick a fast method) is given; ``place`` tells apart several explanations on one page. A click
    elsewhere reruns the page but not the work: the new run waits for the same job (``computed_in_background``).
    Nothing is drawn inside a cached function, so a stored result survives every later rerun.
    """
    key = (image.digest, model.name, layer or model.default_layer_for(method), target_key(target), method)
    found = shared_results().get(key)
    if found is not None:
        return found
    picture = Image.fromarray(decode_image(image.digest, image.data))
    registered = core.METHODS.get(method)
    if registered is None or not registered.forward_passes:
        with st.spinner("Explaining the image…"):
            return shared_results().put(key, compute_explanation(picture, model, layer, target, method))

    def describe(done: int, total: int) -> str:
        return f"{registered.title}: testing the image with feature map {done} of {total}…"

    def compute(progress: Progress) -> Result:
        return compute_explanation(picture, model, layer, target, method, progress)

    return computed_in_background(explanation_work(), key, compute, describe, place, on_cancel)
