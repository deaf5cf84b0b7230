"""Cached 3-D work: a scan read once per content, a 3-D model loaded once per files and options, an explanation
computed once per scan, model, layer, class and method.

As for images (``dashboard/cache.py``), what is shared between sessions is keyed by content hashes and holds no
file name, and nothing is drawn inside a cached function, so a result survives every later rerun (a slider, a
window, another tab and back). Slow methods (Score-CAM) run on the shared worker threads with a bar and Cancel.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

import gradcam_core as core
from gradcam_core.dicom import Window
from gradcam_core.volume_cam import VolumeExplanation, explain_volume
from gradcam_core.volume_models import LoadedVolumeModel, load_volume_model
from gradcam_core.volume_view import scan_window
from gradcam_core.volumes import MAX_VOLUME_BYTES, Volume, read_volume

from .background import BackgroundWork, Progress
from .cache import worker_pool
from .kept_uploads import KeptFiles
from .progress import computed_in_background
from .shared_results import SharedResults
from .volume_model import VolumeModelChoice

TOP_K = 5
RESULT_ENTRIES = 32
"""Explanations kept for all sessions (a layer-sized map each: a few KB; one kept with its trace for the teaching
view also holds the layer's activations and gradients, e.g. 64 KB for a DenseNet121 at 64 x 64 x 64)."""
RESULT_TTL_SECONDS = 3600


def scan(files: KeptFiles) -> Volume:
    """The scan in ``files`` (one file, or a DICOM series' files)."""
    return read_scan(files.digest, files.data)


@st.cache_resource(show_spinner="Reading the scan…", max_entries=2, ttl=3600)
def read_scan(digest: str, _files: tuple[bytes, ...]) -> Volume:
    """The scan ``_files`` (identified by their ``digest``), read once and shared read-only."""
    return read_volume(_files[0] if len(_files) == 1 else list(_files), max_bytes=MAX_VOLUME_BYTES)


@st.cache_data(show_spinner=False, max_entries=8, ttl=3600)
def opening_window(digest: str, _volume: Volume) -> tuple[float, float]:
    """Level and width the scan ``digest`` opens with (``volume_view.scan_window``)."""
    window = scan_window(_volume)
    return window.center, window.width


def window_of(digest: str, volume: Volume) -> Window:
    """``opening_window`` as a ``Window``."""
    return Window(*opening_window(digest, volume))


@st.cache_resource(show_spinner="Loading your 3-D model…", max_entries=2, ttl=3600)
def load_model(key: str, _choice: VolumeModelChoice) -> LoadedVolumeModel:
    """The user's 3-D model, loaded once per content ``key`` (``VolumeModelChoice.key``); it carries no file name."""
    return load_volume_model(_choice.request())


@st.cache_resource(show_spinner=False)
def shared_results() -> SharedResults[VolumeExplanation]:
    """The 3-D explanations of every session, keyed by scan content, model key and settings."""
    return SharedResults(max_entries=RESULT_ENTRIES, ttl=RESULT_TTL_SECONDS)


@st.cache_resource(show_spinner=False)
def explanation_work() -> BackgroundWork[VolumeExplanation]:
    """Slow 3-D explanations in flight, finished ones kept in ``shared_results``."""
    return BackgroundWork(shared_results(), worker_pool())


def explained(
    files: KeptFiles,
    choice: VolumeModelChoice,
    model: LoadedVolumeModel,
    layer: str | None,
    target: int | None,
    method: str,
    on_cancel: Callable[[], None] | None = None,
    *,
    place: str = "scan-explanation",
    keep_trace: bool = False,
) -> VolumeExplanation:
    """The explanation of the scan ``files`` by ``model``, computed once per content and settings.

    A method that runs the model once per feature map runs on a worker thread behind a progress bar (and a
    Cancel button calling ``on_cancel``) drawn at ``place`` (one name per place of the page); the others run here,
    behind a spinner. ``keep_trace`` keeps every intermediate (``VolumeExplanation.trace``), stored apart.
    """
    key = ("volume", files.digest, choice.key, layer or model.default_layer_for(method), target, method, keep_trace)
    found = shared_results().get(key)
    if found is not None:
        return found
    volume = scan(files)

    def compute(progress: Progress | None = None) -> VolumeExplanation:
        result = explain_volume(volume, model, layer, target, method, top_k=TOP_K, keep_trace=keep_trace,
                                progress=progress)
        result.raw_map.flags.writeable = False  # shared between sessions
        return result

    registered = core.METHODS.get(method)
    if registered is None or not registered.forward_passes:
        with st.spinner("Explaining the scan…"):
            return shared_results().put(key, compute())

    def describe(done: int, total: int) -> str:
        return f"{registered.title}: testing the scan with feature map {done} of {total}…"

    return computed_in_background(explanation_work(), key, compute, describe, place, on_cancel)
