"""Grad-CAM dashboard: `streamlit run dashboard/app.py`.

Reads the sidebar into a frozen ``Settings``, asks the cached engine for the explanation and renders it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

import gradcam_core as core  # noqa: E402
from gradcam_core import LoadedModel  # noqa: E402
from dashboard import cache, controls, teaching, views  # noqa: E402
from dashboard.guard import reported_errors  # noqa: E402
from dashboard.settings import Settings  # noqa: E402


def main() -> None:
    """Draw the page once (Streamlit reruns this on every interaction)."""
    st.set_page_config(page_title="Grad-CAM explorer", page_icon=":material/visibility:", layout="wide")
    views.header()

    with st.sidebar:
        image = controls.image_input()
        status = controls.model_choice(core.available_models())

    model = top = None
    if not status.available:
        st.info(status.reason or f"{status.title} cannot be loaded on this machine.", icon=":material/info:")
    else:
        with reported_errors("loading the model and the image"):
            model = cache.load_model(status.name)
            top = cache.predictions(image, model)

    with st.sidebar:
        choice = controls.class_choice(top, model, key=f"{image.digest[:16]}-{status.name}")
        method = controls.method_choice()
        layer = controls.layer_choice(model)
        alpha, colormap = controls.display_choice()

    settings = Settings(
        image=image,
        model=status.name,
        layer=layer,
        target=None if top is None or choice == top[0].index else choice,
        method=method,
        alpha=alpha,
        colormap=colormap,
    )
    if model is None or top is None:
        views.recovery_hint(image_ok=model is not None)
        return

    with reported_errors("explaining the image"):
        render(settings, model)


def render(settings: Settings, model: LoadedModel) -> None:
    """The explanation for ``settings``: a summary, then the main view or the "How it works" view.

    Both views read the same cached result; only the open tab is drawn (switching tabs reruns the script).
    """
    image = settings.image
    result = cache.explain(settings)
    full = cache.decode_image(image.digest, image.data)
    shown = cache.display_image(image.digest, image.data)
    size = (full.shape[1], full.shape[0])
    views.summary(result, model.title, settings)
    main_tab, teaching_tab = st.tabs(["Explanation", "How it works"], key="view", on_change="rerun")
    if teaching_tab.open:
        with teaching_tab:
            teaching.render(settings, result, shown, size)
        return
    with main_tab:
        views.panels(shown, size, result, settings)
        st.divider()
        left, right = st.columns([3, 2], gap="large")
        with left:
            views.predictions(result)
        with right:
            views.download_buttons(full, result, settings, model.title)
            views.how_to_read(result, settings)
            views.details(result, model)


if __name__ == "__main__":
    main()
