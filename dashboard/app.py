"""Grad-CAM dashboard: `streamlit run dashboard/app.py`.

Reads the sidebar into a frozen ``Settings``, asks the cached engine for the explanation and draws the open tab.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

import gradcam_core as core
from gradcam_core import LoadedModel, ModelStatus
from dashboard import cache, controls, handoff, views
from dashboard.guard import reported_errors
from dashboard.own_model import own_model_form
from dashboard.page import Page
from dashboard.server import forbid_address_lookups
from dashboard.settings import ImageInput, OwnModel, Settings
from dashboard.tabs import audit, compare, explanation, gallery, scan, teaching, trust

logger = logging.getLogger(__name__)
ICON = Path(__file__).resolve().parents[1] / "assets" / "icon.png"
# Every tab, in order: a title and a ``render(page)``. A new tab is one module in dashboard/tabs and one line here
# (a comment, not a docstring: Streamlit's magic would draw a bare string on the page).
TABS = {
    "Explanation": explanation.render,
    "Compare": compare.render,
    "Trust checks": trust.render,
    "Gallery": gallery.render,
    "How it works": teaching.render,
    "Audit": audit.render,
    "3-D scan": scan.render,
}
# Tabs that do not explain the sidebar's image: they get no ``Page`` and no summary above them.
ON_THEIR_OWN = frozenset({"Audit", "3-D scan"})


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
        audited_class = handoff.pending_class(image.digest) if image and top else None
        if audited_class is not None:
            controls.preselect_class(audited_class, top, key)
        choice = controls.class_choice(top, model, key=key, image=image)
        method = controls.method_choice(model)
        layer = controls.layer_choice(model, method)
        display = controls.display_choice()

    settings = None
    if image is not None and model is not None and top is not None:
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
            st.info("Give your model's files in the sidebar: pick its source, then upload them.", icon=":material/upload_file:")
            return None
        return cache.own_model(own)
    if not status.available:
        logger.warning("%s is unavailable: %s", status.name, status.reason)
        st.info(f"{status.title} is not installed on this server; pick another model.", icon=":material/info:")
        return None
    return cache.load_model(status.name)


def render(settings: Settings | None, model: LoadedModel | None, uploads: tuple[ImageInput, ...]) -> None:
    """The explanation for ``settings``: a summary, then the open tab (``settings`` ``None``: nothing to explain).

    Every tab reads the same cached result; only the open tab is drawn (switching tabs reruns the script). The
    result is computed inside the open tab, so a slow method's progress bar never hides the tabs. A tab of
    ``ON_THEIR_OWN`` ignores the sidebar's image: it neither waits for nor shows its explanation.
    """
    summary, warning = st.container(), st.container()
    tabs = dict(zip(TABS, st.tabs(list(TABS), key="view", on_change="rerun")))
    opened = next((name for name, tab in tabs.items() if tab.open), next(iter(TABS)))
    if opened in ON_THEIR_OWN:
        with tabs[opened]:
            TABS[opened](None)
        return
    if settings is None or model is None:
        with tabs[opened]:
            views.recovery_hint(model_ok=model is not None)
        return
    with warning:
        views.photo_model_warning(model, settings.image)
    with tabs[opened]:
        result = cache.explain(settings, model, on_cancel=controls.use_default_method)
    picture = cache.display_image(settings.image.digest, settings.image.data)
    full = cache.decode_image(settings.image.digest, settings.image.data)
    with summary:
        views.summary(result, model.title, settings)
    with tabs[opened]:
        TABS[opened](Page(settings, model, result, picture, (full.shape[1], full.shape[0]), uploads))


if __name__ == "__main__":
    main()
