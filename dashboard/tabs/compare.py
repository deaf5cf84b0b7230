"""The Compare tab: several classes, methods or layers for one image, side by side, on a common scale if asked.

Each panel is one cached explanation computed exactly as in the Explanation tab, with one setting changed.
On a common scale the colours run from 0 to the largest peak of the panels, in the maps' raw units, so a weak
map looks weak; otherwise each map is scaled to its own peak, as everywhere else. A segmentation model's
classes are compared over their predicted regions (only the classes it predicts somewhere in the image); a
gradient-free model offers only the methods it can run (``choices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import streamlit as st

import gradcam_core as core
from gradcam_core import LoadedModel

from .. import cache, choices, controls, figures
from ..cache import Result
from ..page import Page
from ..settings import Settings
from ..text import plain

MAX_PANELS = 6
COLUMNS = 3
KINDS = ("Classes", "Methods", "Layers")
COMPARED_METHODS_KEY = "compare-methods"


def render(page: Page) -> None:
    """Pick what to compare, then draw the grid."""
    settings, model, result = page.settings, page.model, page.result
    st.caption(
        "Put maps side by side: the evidence for one class next to another's, or what different methods or "
        "layers make of the same image. Hover over a map to read its values."
    )
    kind_column, scale_column = st.columns([3, 1], vertical_alignment="bottom")
    with kind_column:
        kind = st.segmented_control("Compare", KINDS, default=KINDS[0], key="compare-kind") or KINDS[0]
    with scale_column:
        common = st.toggle(
            "Common scale",
            value=kind != "Methods",
            key=f"compare-common-{kind}",
            help="On: one colour scale in raw units for every panel, so weaker evidence looks weaker. "
            "Off: each map runs from 0 to its own peak.",
        )
    variants = pick(kind, settings, model, result)
    note(kind, settings, model, result)
    if not variants:
        st.info("Pick at least one item to compare.", icon=":material/info:")
        return
    if kind == "Methods" and common:
        st.caption("Methods weight the feature maps differently, so their raw units are not strictly comparable.")
    if kind == "Layers" and common:
        st.caption(
            "Layers differ in their number of channels and in the size of their values, so on a common scale an "
            "earlier layer can look empty beside a later one. Turn *Common scale* off to see each map's own pattern."
        )
    results = [
        (title, cache.explain(variant, model, place=f"compare-{number}", on_cancel=cancel_action(kind, variant)))
        for number, (title, variant) in enumerate(variants)
    ]
    grid(results, settings, page.picture, page.size, common)


def pick(kind: str, settings: Settings, model: LoadedModel, result: Result) -> list[tuple[str, Settings]]:
    """The panels to draw: a title and the settings of each (the current settings with one thing changed)."""
    if kind == "Classes":
        labels = model.categories
        top = [p.index for p in choices.explainable(result, model)[:3]]
        chosen = st.multiselect(
            "Regions of classes" if model.segmentation else "Classes", choices.explainable_classes(result, model),
            default=top, format_func=labels.__getitem__, max_selections=MAX_PANELS,
            key=f"compare-classes-{settings.image.digest[:16]}-{model.name}",
            placeholder="Type to search the classes",
        )
        return [(labels[i], replace(settings, target=choices.class_target(settings, result, i))) for i in chosen]
    if kind == "Methods":
        methods = core.METHODS
        allowed = choices.methods(model, result)
        if any(name not in allowed for name in st.session_state.get(COMPARED_METHODS_KEY, ())):
            st.session_state[COMPARED_METHODS_KEY] = [m for m in st.session_state[COMPARED_METHODS_KEY] if m in allowed]
        default = [name for name in ("gradcam", "gradcam++", "layercam") if name in allowed] or allowed
        chosen = st.multiselect(
            "Methods", allowed, default=default, format_func=lambda name: methods[name].title,
            max_selections=MAX_PANELS, key=COMPARED_METHODS_KEY,
        )
        return [(methods[name].title, replace(settings, method=name)) for name in chosen]
    names = [info.name for info in model.layers]
    chosen = st.multiselect(
        "Layers", names, default=names[-3:], max_selections=MAX_PANELS, key=f"compare-layers-{model.name}",
        help="In forward order: later layers are coarser and more class-specific.",
    )
    return [(name, replace(settings, layer=name)) for name in sorted(chosen, key=names.index)]


def note(kind: str, settings: Settings, model: LoadedModel, result: Result) -> None:
    """One caption on what this kind of model changes in the comparison, if anything."""
    if kind == "Classes" and model.segmentation:
        st.caption("Each panel explains one class over the region the model predicts for it; only the classes it "
                   "predicts somewhere in this image can be compared.")
    elif kind == "Classes" and not core.METHODS[settings.method].class_specific:
        st.caption(f"{core.METHODS[settings.method].title} draws the same map for every class: pick a class-specific "
                   "method in the sidebar to compare classes.")
    elif kind == "Methods" and len(choices.methods(model, result)) < len(core.METHODS):
        st.caption(plain(model.gradient_free or result.notice or ""))


def cancel_action(kind: str, variant: Settings) -> Callable[[], None]:
    """What Cancel does while a panel's slow method runs: drop that method from the compared methods, or go
    back to the default method in the sidebar."""
    return partial(drop_compared_method, variant.method) if kind == "Methods" else controls.use_default_method


def drop_compared_method(method: str) -> None:
    """Take ``method`` out of the compared methods."""
    st.session_state[COMPARED_METHODS_KEY] = [m for m in st.session_state[COMPARED_METHODS_KEY] if m != method]


def grid(
    results: list[tuple[str, Result]], settings: Settings, image: np.ndarray, size: tuple[int, int], common: bool
) -> None:
    """The overlays in rows of ``COLUMNS``, each with its peak and its class probability."""
    scale = max(found.strength for _, found in results) if common else None
    if common and not scale:
        scale = None  # every map is empty: nothing to calibrate
    height = figures.panel_height(size, width=380)
    for start in range(0, len(results), COLUMNS):
        for column, (title, found) in zip(st.columns(COLUMNS, gap="medium"), results[start : start + COLUMNS]):
            with column:
                st.markdown(f"**{plain(title)}**")
                st.plotly_chart(
                    figures.heatmap_figure(
                        found.raw_map, size, settings.colormap, height, "evidence", scale,
                        background=image, opacity=max(settings.alpha, 0.05),
                    ),
                    config=figures.plot_config(),
                    key=f"compare-{start}-{title}",
                )
                share = f" · {found.strength / scale:.0%} of the strongest" if scale else ""
                st.caption(
                    f"{plain(found.target.label)} {found.target.probability:.1%} · layer {plain(found.layer)} · "
                    f"peak **{found.strength:.3g}**{share}"
                )
