"""Grad-CAM dashboard: `streamlit run dashboard/app.py`.

Reads the sidebar into a frozen ``Settings``, asks the cached engine for the explanation and renders it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

import streamlit as st  # noqa: E402

import gradcam_core as core  # noqa: E402
from gradcam_core import LoadedModel, ModelStatus  # noqa: E402
from dashboard import cache, compare, controls, detail, gallery, teaching, trust_view, views  # noqa: E402
from dashboard.guard import reported_errors  # noqa: E402
from dashboard.own_model import own_model_form  # noqa: E402
from dashboard.server import forbid_address_lookups  # noqa: E402
from dashboard.settings import ImageInput, OwnModel, Settings  # noqa: E402


logger = logging.getLogger(__name__)
ICON = ROOT / "assets" / "icon.png"
TABS = ("Explanation", "Compare", "Trust checks", "Gallery", "How it works")


def main() -> None:
    """Draw the page once (Streamlit reruns this on every interaction)."""
    forbid_address_lookups()
    # A file of ours: a Material-icon page icon makes every visitor's browser fetch it from Google's font CDN.
    st.set_page_config(page_title="Grad-CAM explorer", page_icon=str(ICON), layout="wide")
    views.header()

    with st.sidebar:
        image, uploads = controls.image_inputs()
        status = controls.model_choice(core.available_models())
        own = None
        if status is None:
            with reported_errors("reading your model's files"):
                own = own_model_form()

    model = top = None
    with reported_errors("loading the model and the image"):
        model = chosen_model(status, own)
        if model is not None and image is not None:
            top = cache.predictions(image, model)

    with st.sidebar:
        key = f"{image.digest[:16] if image else ''}-{model.name if model else ''}"
        choice = controls.class_choice(top, model, key=key)
        method = controls.method_choice()
        layer = controls.layer_choice(model, method)
        display = controls.display_choice()

    if image is None or model is None or top is None:
        views.recovery_hint(model_ok=model is not None)
        return
    settings = Settings(
        image=image,
        model=model.name,
        layer=layer,
        target=None if choice == top[0].index else choice,
        method=method,
        **display,
    )
    with reported_errors("explaining the image"):
        render(settings, model, uploads)


def chosen_model(status: ModelStatus | None, own: OwnModel | None) -> LoadedModel | None:
    """The registered model of ``status``, or the user's own model when ``status`` is ``None``.

    ``None`` (with a note on the page) while the model cannot be loaded or the user's files are missing.
    """
    if status is None:
        if own is None:
            st.info("Upload your model's weights and class names in the sidebar.", icon=":material/upload_file:")
            return None
        return cache.own_model(own)
    if not status.available:
        logger.warning("%s is unavailable: %s", status.name, status.reason)
        st.info(f"{status.title} is not installed on this server; pick another model.", icon=":material/info:")
        return None
    return cache.load_model(status.name)


def render(settings: Settings, model: LoadedModel, uploads: tuple[ImageInput, ...]) -> None:
    """The explanation for ``settings``: a summary, then the open tab.

    Every tab reads the same cached result; only the open tab is drawn (switching tabs reruns the script). The
    result is computed inside the open tab, so a slow method's progress bar never hides the tabs.
    """
    image = settings.image
    summary = st.container()
    if dict(image.facts).get("Modality") and model.name in core.MODELS:
        st.warning(
            f"{model.title} learned from everyday photos (ImageNet), not medical images: its classes say little "
            "about a scan. Pick *Your own model* under Neural network to explain a model trained on your images.",
            icon=":material/warning:",
        )
    tabs = dict(zip(TABS, st.tabs(list(TABS), key="view", on_change="rerun")))
    opened = next((name for name, tab in tabs.items() if tab.open), TABS[0])
    with tabs[opened]:
        result = cache.explain(settings, model, on_cancel=controls.use_default_method)
    full = cache.decode_image(image.digest, image.data)
    shown = cache.display_image(image.digest, image.data)
    size = (full.shape[1], full.shape[0])
    with summary:
        views.summary(result, model.title, settings)
    with tabs[opened]:
        if opened == "Explanation":
            views.panels(shown, size, result, settings)
            detail.render(shown, size, result, settings, model)
            st.divider()
            left, right = st.columns([3, 2], gap="large")
            with left:
                views.predictions(result, model)
            with right:
                views.download_buttons(full, result, settings, model)
                views.how_to_read(result, settings)
                views.details(result, model)
        elif opened == "Compare":
            compare.render(settings, model, result, shown, size)
        elif opened == "Trust checks":
            trust_view.render(settings, model, result, shown, size)
        elif opened == "Gallery":
            gallery.render(settings, model, uploads)
        else:
            teaching.render(settings, model, result, shown, size)


if __name__ == "__main__":
    main()
