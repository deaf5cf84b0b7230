"""The Trust checks tab: three ways to question the map on screen (``gradcam_core.trust``).

* Faithfulness: does the class probability fall when the hottest pixels are deleted first, and rise when they
  are revealed first, faster than in a random order? (deletion / insertion curves and their areas)
* Sanity check (Adebayo et al. 2018): the same map from a copy of the model with its top layers re-initialised;
  a map that barely changes does not depend on what the model learned.
* Region check: the share of the heat inside a region the user draws or uploads, and whether the peak is in it.

Each check is cached per image, model, layer, target and method, like the explanation itself. The faithfulness
and sanity checks follow the map's target (``gradcam_core.objectives``): a class, several classes together, a
binary model's negative side, or a segmentation class over its region (predicted or a box), the region fixed as
the model sees it on the whole image. One sentence replaces the sanity check of a model without gradients, and
both on an image the model's PyTorch conversion cannot be trusted on. The region check works for every map.
"""

from __future__ import annotations

import cv2
import numpy as np
import streamlit as st
from PIL import Image

import gradcam_core as core
from gradcam_core import FaithfulnessCurves, LoadedModel, RandomizedModel, SanityCheck, trust

from .. import cache, choices, figures
from ..cache import Result
from ..page import Page
from ..guard import reported_errors
from ..background import BackgroundWork, Progress
from ..progress import computed_in_background
from ..settings import Settings, Target
from ..shared_results import SharedResults
from ..text import method_title, plain
from ..uploads import IMAGE_BYTES, IMAGE_MB, received


CANCELLED_KEY = "trust-cancelled"
"""Session-state key: the faithfulness check the user cancelled (its store key)."""
UNTRUSTED = ("This check runs the model's PyTorch conversion, which cannot be trusted on this image (see the note "
             "above).")


@st.cache_resource(show_spinner=False)
def shared_curves() -> SharedResults[FaithfulnessCurves]:
    """Faithfulness curves of every session, keyed by image content and settings."""
    return SharedResults(max_entries=64, ttl=3600)


@st.cache_resource(show_spinner=False)
def curves_work() -> BackgroundWork[FaithfulnessCurves]:
    """Faithfulness checks in flight, finished ones kept in ``shared_curves``."""
    return BackgroundWork(shared_curves(), cache.worker_pool())


def faithfulness(settings: Settings, model: LoadedModel, result: Result) -> FaithfulnessCurves | None:
    """Deletion and insertion curves of the map on screen, computed once, with a progress bar and a Cancel.

    ``None`` while the user has cancelled them (a button offers to run them again).
    """
    key = (settings.image.digest, model.name, result.layer, cache.target_key(settings.target), result.method)
    found = shared_curves().get(key)
    if found is not None:
        return found
    if st.session_state.get(CANCELLED_KEY) == key:
        st.info("The faithfulness check was cancelled.", icon=":material/info:")
        st.button("Run the faithfulness check", key="trust-run", on_click=st.session_state.pop, args=(CANCELLED_KEY,))
        return None
    picture = Image.fromarray(cache.decode_image(settings.image.digest, settings.image.data))

    def compute(progress: Progress) -> FaithfulnessCurves:
        return trust.deletion_insertion(model, picture, result.raw_map, settings.target, progress=progress)

    return computed_in_background(
        curves_work(),
        key,
        compute,
        lambda done, total: f"Deleting and revealing pixels: model run {done} of {total}…",
        "trust",
        st.session_state.__setitem__,
        (CANCELLED_KEY, key),
    )


@st.cache_resource(show_spinner="Copying the model with random top layers…", max_entries=2, ttl=3600)
def randomized(model: str, _model: LoadedModel, layer: str) -> RandomizedModel:
    """A copy of ``_model`` with every layer from ``layer`` to the output re-initialised (made once, shared)."""
    return trust.randomized_copy(_model, layer)


@st.cache_data(show_spinner="Explaining with the randomised model…", max_entries=64, ttl=3600)
def sanity(
    digest: str, _data: bytes, model: str, _model: LoadedModel, layer: str, target: str, _target: Target, method: str
) -> SanityCheck:
    """The sanity check of this explanation (``_target``, keyed by ``target``: ``target_text(_target)``) against
    the randomised copy of the model."""
    picture = Image.fromarray(cache.decode_image(digest, _data))
    copy = randomized(model, _model, layer)
    return trust.sanity_check(_model, picture, layer, _target, method, randomized=copy)


def target_text(target: Target) -> str:
    """``target``'s cache key (``cache.target_key``) as text, which Streamlit's cache hashes whatever the objective."""
    return repr(cache.target_key(target))


def render(page: Page) -> None:
    """One verdict, then the three checks for the explanation on screen."""
    settings, model, result, image, size = page.settings, page.model, page.result, page.picture, page.size
    st.caption(
        f"Three ways to question the map for **{plain(result.target.label)}** before trusting it. "
        "Passing them does not prove the model right; failing one is a reason for doubt."
    )
    curves = check = None
    # Both follow the map's objective with the model itself (the sanity check with gradients, on a copy).
    faithfulness_reason = UNTRUSTED if result.notice is not None else None
    sanity_reason = choices.needs_gradients("The sanity check", model, result)
    if faithfulness_reason is None:
        with reported_errors("measuring faithfulness"):
            curves = faithfulness(settings, model, result)
    if sanity_reason is None:
        with reported_errors("running the sanity check"):
            check = sanity(settings.image.digest, settings.image.data, model.name, model, result.layer,
                           target_text(settings.target), settings.target, result.method)
    verdict(curves, check, result)
    if curves is not None:
        faithfulness_section(curves, result.target.label)
    elif faithfulness_reason is not None:
        unavailable("Faithfulness", faithfulness_reason)
    st.divider()
    if check is not None:
        sanity_section(check, result, settings, image, size)
    elif sanity_reason is not None:
        unavailable("Sanity check", sanity_reason)
    st.divider()
    with reported_errors("checking the region"):
        region_section(result, settings, image, size)


def unavailable(title: str, reason: str) -> None:
    """A check that cannot run for this model or map: its title and the one sentence why."""
    st.subheader(title, anchor=False)
    st.info(reason, icon=":material/block:")


def verdict(curves: FaithfulnessCurves | None, check: SanityCheck | None, result: Result) -> None:
    """One combined verdict: green only when every check that ran passed, never beside a failed one."""
    method = method_title(result.method)
    failed = []
    if curves is not None and not curves.beats_random:
        failed.append("the map does not order the pixels better than chance (faithfulness)")
    if check is not None and check.suspicious:
        failed.append(f"{method} draws much the same map when the model's top layers are random (sanity check)")
    if failed:
        st.warning("Treat this map with caution: " + "; ".join(failed) + ".", icon=":material/flag:")
    elif curves is not None and check is not None:
        st.success(
            f"Both checks passed: the map orders the pixels better than chance, and {method}'s map changes when "
            "the learned weights are destroyed.",
            icon=":material/check_circle:",
        )


def faithfulness_section(curves: FaithfulnessCurves, label: str) -> None:
    """Both curves with their random-order baselines, the areas under them, and what they measure (``label``:
    what the map explains)."""
    st.subheader("Faithfulness: delete or reveal the hottest pixels first", anchor=False)
    chart, numbers = st.columns([3, 1], gap="large")
    with chart:
        st.plotly_chart(figures.curves_figure(curves), config={"displayModeBar": False}, key="trust-curves")
    with numbers:
        st.metric("Deletion AUC (lower is better)", f"{curves.deletion_auc:.3f}",
                  f"{curves.deletion_auc - curves.random_deletion_auc:+.3f} vs random", delta_color="inverse")
        st.metric("Insertion AUC (higher is better)", f"{curves.insertion_auc:.3f}",
                  f"{curves.insertion_auc - curves.random_insertion_auc:+.3f} vs random")
    reading = (
        "The map orders the pixels better than chance in both directions."
        if curves.beats_random
        else "The map does **not** beat a random order in both directions: treat it with caution."
    )
    st.caption(
        f"The curves follow {measured(curves, label)}. Pixels are replaced by a blurred copy of the image, hottest "
        "first (deletion) or revealed on the blurred copy hottest first (insertion); dashed lines use a random "
        f"order. {reading}"
    )


def measured(curves: FaithfulnessCurves, label: str) -> str:
    """What the faithfulness curves follow, in words: ``the probability of **tabby**``."""
    name = f"**{plain(label)}**"
    if isinstance(curves.objective, core.RegionScore):
        return (f"the probability of {name}: the class's probability averaged over the region explained, the same "
                "on every masked copy")
    if isinstance(curves.objective, core.WeightedClasses):
        return f"the probability of {name}: the mean of the classes' probabilities, weighted as in the map"
    return f"the probability of {name}"


def sanity_section(check: SanityCheck, result: Result, settings: Settings, image: np.ndarray, size: tuple[int, int]) -> None:
    """The real map beside the randomised model's map, their similarity and the flag."""
    st.subheader("Sanity check: the same map from a model that learned nothing at the top", anchor=False)
    height = figures.panel_height(size, width=380)
    real, fake, numbers = st.columns([2, 2, 1], gap="medium")
    for column, title, raw, name in (
        (real, "This model", check.real_map, "real"),
        (fake, f"Top {len(check.randomized_modules)} layers randomised", check.random_map, "random"),
    ):
        with column:
            st.markdown(f"**{title}**")
            st.plotly_chart(
                figures.heatmap_figure(raw, size, settings.colormap, height, "evidence",
                                       background=image, opacity=max(settings.alpha, 0.05)),
                config=figures.plot_config(),
                key=f"sanity-{name}",
            )
    with numbers:
        st.metric("Rank correlation ρ", f"{check.similarity:.2f}")
        method = method_title(result.method)
        if check.suspicious:
            st.caption(
                f"|ρ| is above {check.threshold:.1f}: with the learned weights destroyed, {method} still draws much "
                "the same map" + (" (or its inverse)" if check.similarity < 0 else "") + ", so here it may show "
                "the image's structure rather than what the model learned."
            )
        else:
            st.caption(
                f"|ρ| is at most {check.threshold:.1f}: {method}'s map changes when the learned weights are "
                "destroyed, as a method that depends on them should."
            )
    st.caption(
        f"Re-initialised: {', '.join(plain(name) for name in check.randomized_modules[:4])}"
        + (" …" if len(check.randomized_modules) > 4 else "")
        + f" (from the output down to layer {plain(check.layer)})."
    )


def region_section(result: Result, settings: Settings, image: np.ndarray, size: tuple[int, int]) -> None:
    """Draw a box or lasso on the overlay, or upload a mask; the region is outlined on the map, with the heat
    share and the pointing game beside it."""
    st.subheader("Region check: is the heat where it should be?", anchor=False)
    drawing, report = st.columns([2, 1], gap="large")
    chart_key = f"region-{settings.image.digest[:16]}"
    shape = image.shape[:2]
    with report:
        upload = st.file_uploader(
            "…or upload a mask", type=["png", "bmp", "tif", "tiff"], key="region-mask",
            max_upload_size=IMAGE_MB,
            help="A black-and-white picture the size of the image; white marks the region.",
        )
        mask = (
            uploaded_mask(received(upload, IMAGE_MB, "the mask"), size, shape)
            if upload is not None
            else drawn_mask(st.session_state.get(chart_key), size, shape)  # the chart's current selection
        )
    with drawing:
        figure = figures.heatmap_figure(result.raw_map, size, settings.colormap, figures.panel_height(size, 520),
                                        "evidence", background=image, opacity=max(settings.alpha, 0.05))
        figure.update_layout(dragmode="select")
        if mask is not None:
            figures.outline(figure, mask, size)
        st.plotly_chart(
            figure,
            config={**figures.plot_config(), "modeBarButtonsToRemove": ["autoScale2d", "toImage"]},
            on_select="rerun",
            selection_mode=("box", "lasso"),
            key=chart_key,
        )
        st.caption("Drag on the map to draw a box (or pick *Lasso select* in the chart's toolbar); the region is "
                   "outlined in white.")
    with report:
        if mask is None:
            st.info("Draw or upload a region to check.", icon=":material/draw:")
            return
        check = core.region_check(result.heatmap_at(shape), mask)
        st.metric("Heat inside the region", f"{check.heat_share:.0%}",
                  f"{check.heat_share - check.area_share:+.0%} vs a uniform map")
        st.metric("Peak inside the region", "yes" if check.peak_inside else "no")
        st.caption(f"The region covers {check.area_share:.0%} of the image; a map that ignored it would put that "
                   "share of its heat there.")


def drawn_mask(event: object, size: tuple[int, int], shape: tuple[int, int]) -> np.ndarray | None:
    """The boxes and lassos of a Plotly selection event (in pixels of the ``size`` image) as a mask of ``shape``."""
    selection = getattr(event, "selection", None) or {}
    width, height = size
    scale = np.array([shape[1] / width, shape[0] / height])
    mask = np.zeros(shape, np.uint8)
    for box in selection.get("box", []):
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * scale
        cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    for lasso in selection.get("lasso", []):
        points = np.column_stack([lasso["x"], lasso["y"]]) * scale
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool) if mask.any() else None


def uploaded_mask(data: bytes, size: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """An uploaded mask picture as a boolean mask of ``shape`` (it must have the image's ``size``)."""
    picture = core.load_image(data, max_bytes=IMAGE_BYTES).convert("L")
    if picture.size != size:
        raise core.ImageError(
            f"The mask is {picture.width} × {picture.height} px but the image is {size[0]} × {size[1]} px; "
            "upload a mask of the same size."
        )
    grey = cv2.resize(np.asarray(picture), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return grey > 127
