"""Fine detail under the main panels: guided backpropagation and Guided Grad-CAM (Selvaraju et al. 2017).

Guided backpropagation shows the pixel-level edges and textures the class score responds to, for any class
alike; multiplied by the (coarse, class-specific) Grad-CAM heatmap it becomes Guided Grad-CAM: sharp *and*
class-discriminative. It costs one more forward and a full backward, so it runs only when asked, on the
browser-sized copy of the image, and is cached like the explanation.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from gradcam_core import LoadedModel, guide
from gradcam_core.render import gradient_to_rgb

from . import cache, downloads, figures
from .cache import Result
from .settings import Settings
from .text import map_subject, method_title


@st.cache_data(show_spinner="Tracing the gradient back to the pixels…", max_entries=32, ttl=3600)
def guided_pictures(
    digest: str, model: str, layer: str, target: int, method: str, _result: Result, _model: LoadedModel,
    _image: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Guided backpropagation and Guided Grad-CAM of ``_result`` as RGB pictures the size of ``_image``."""
    guided = guide(_result.explanation(_image), _model)
    return gradient_to_rgb(guided.guided_backprop), gradient_to_rgb(guided.guided_gradcam)


def render(image: np.ndarray, size: tuple[int, int], result: Result, settings: Settings, model: LoadedModel) -> None:
    """A toggle, then guided backpropagation beside Guided Grad-CAM."""
    if not st.toggle(
        "Show fine detail (Guided Grad-CAM)",
        key="guided",
        help="Pixel-level detail of what the class score responds to, restricted to the heatmap's regions.",
    ):
        return
    backprop, guided_cam = guided_pictures(
        settings.image.digest, model.name, result.layer, result.target.index, result.method, result, model, image
    )
    height = figures.panel_height(size)
    left, right, note = st.columns(3, gap="medium")
    with left:
        st.markdown("**Guided backpropagation**")
        st.plotly_chart(figures.image_figure(backprop, size, height), config=figures.plot_config(), key="guided-bp")
        st.caption("Edges and textures the score responds to; not class-specific (grey = no effect).")
    with right:
        method = method_title(result.method)
        st.markdown(f"**Guided {method}**")
        st.plotly_chart(figures.image_figure(guided_cam, size, height), config=figures.plot_config(), key="guided-cam")
        st.caption(f"The same detail kept only where the heatmap shows {map_subject(result.method, result.target.label)}.")
        st.download_button(
            f"Guided {method} PNG",
            downloads.guided_gradcam_png(cache.decode_image(settings.image.digest, settings.image.data), result, model),
            file_name=f"{downloads.file_stem(settings.image.name)}-guided-gradcam.png",
            mime="image/png",
            icon=":material/download:",
            help="At the image's full resolution.",
            on_click="ignore",
            key="download-guided",
        )
    with note:
        st.markdown(
            "Guided backpropagation lets only positive signals flow back through the network's ReLUs, which "
            "gives sharp pictures that look alike for every class. Multiplying by the heatmap makes the detail "
            "class-specific. Adebayo et al. (2018) found guided backpropagation nearly unchanged when a model's "
            "weights are randomised: read its sharpness with care (see *Trust checks*)."
        )
