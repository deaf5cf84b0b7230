"""The "How it works" tab: the five steps of Grad-CAM with the real numbers of the image on screen.

Everything here reads the cached ``Result`` the Explanation tab reads: its ``steps`` were kept from the same
forward pass and partial backward that made the main heatmap. The class it is compared with (step 5) is one
more cached explanation, computed the same way (for a segmentation model, another class it predicts somewhere,
over its region). A model without gradients gets one sentence instead: every step follows them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st

from gradcam_core import LoadedModel

from gradcam_core.render import overlay

from .. import cache, choices, controls, figures
from ..cache import Result
from ..page import Page
from ..settings import Settings
from ..text import plain, score_verb
from .. import tiles

GRADIENT = r"\frac{\partial y^c}{\partial A^k_{ij}}"
FORMULAS: dict[str, tuple[str, str]] = {
    "gradcam": (
        rf"\alpha_k^c = \frac{{1}}{{Z}} \sum_i \sum_j {GRADIENT}",
        "Grad-CAM takes the average of these {cells} numbers (Z = {cells} cells): that average is the "
        "channel's weight.",
    ),
    "counterfactual": (
        rf"\alpha_k^c = -\frac{{1}}{{Z}} \sum_i \sum_j {GRADIENT}",
        "Counterfactual Grad-CAM takes *minus* the average of these {cells} numbers, so channels that lower "
        "the score get a positive weight.",
    ),
    "gradcam++": (
        rf"\alpha_k^c = \sum_i \sum_j a^{{kc}}_{{ij}}\, \mathrm{{ReLU}}\!\left({GRADIENT}\right),\quad "
        r"a^{kc}_{ij} = \frac{g_{ij}^2}{2 g_{ij}^2 + \sum_{a,b} A^k_{ab}\, g_{ij}^3}",
        "Grad-CAM++ adds up only the positive gradients g of the {cells} cells, each with its own factor a.",
    ),
    "xgradcam": (
        rf"\alpha_k^c = \sum_i \sum_j \frac{{A^k_{{ij}}}}{{\sum_{{a,b}} A^k_{{ab}}}}\, {GRADIENT}",
        "XGrad-CAM averages the gradients of the {cells} cells, giving more say to the cells where the "
        "channel is active.",
    ),
    "hirescam": (
        rf"w^{{kc}}_{{ij}} = {GRADIENT}",
        "HiResCAM does not average: every one of the {cells} cells keeps its own gradient as its weight. "
        "The bars show each channel's **average** weight.",
    ),
    "layercam": (
        rf"w^{{kc}}_{{ij}} = \mathrm{{ReLU}}\!\left({GRADIENT}\right)",
        "LayerCAM does not average: every one of the {cells} cells keeps its positive gradient as its "
        "weight. The bars show each channel's **average** weight.",
    ),
}
"""LaTeX and one plain sentence for each method's weights; other methods get a generic sentence."""
SCORE_LABEL = "Score $y^c$ before softmax"
"""Label of the class score metric (the Technical details of the Explanation tab show the same number)."""


def render(page: Page) -> None:
    """The five steps of the explanation on screen."""
    settings, result = page.settings, page.result
    steps = result.steps
    reason = choices.needs_gradients("The step-by-step view of Grad-CAM", page.model, result)
    if reason is not None:
        st.info(reason, icon=":material/block:")
        return
    if steps is None:
        st.info("The steps of this explanation were not kept; change a setting to compute them.")
        return
    label = plain(result.target.label)
    st.caption(
        f"How the map for **{label}** is made, step by step, with the numbers computed for this image — the "
        "same single computation as the Explanation tab. Hover over any chart to read its values."
    )
    shown = feature_maps(result)
    weights(result, shown)
    weighted_sum(result, settings)
    upsampling(result, settings, page.picture, page.size)
    comparison(result, settings, page.model, page.picture, page.size)


def _title(number: int, text: str) -> None:
    st.subheader(f"{number} · {text}", anchor=False, divider="gray")


def _name(result: Result) -> str:
    """``α`` for methods with one weight per channel, ``mean w`` for element-wise ones."""
    return "mean w" if result.steps is not None and result.steps.elementwise else "α"


def feature_maps(result: Result) -> np.ndarray:
    """Step 1: the forward pass and the layer's feature maps A^k, as tiles; returns the channels shown."""
    steps = result.steps
    rows, cols = steps.cam.shape
    height, width = result.input_size
    total = steps.num_channels
    _title(1, "The forward pass: feature maps $A^k$")
    st.markdown(
        f"The network reads the image (resized to {width} × {height} pixels). At layer {plain(result.layer)} it has "
        f"turned it into **{total} feature maps** $A^k$, each a grid of {rows} × {cols} cells. Each map is one "
        "detector (of fur, an eye, an edge…) and is bright where that detector fires."
    )
    rankings = list(tiles.RANKINGS)
    ranking = st.segmented_control(
        "Show the channels with the",
        rankings,
        default=rankings[0],
        format_func=str.capitalize,
        key="tiles-ranking",
        help="Weight: how much the channel matters for the class (step 2). Contribution: weight × average "
        "activation, what the channel actually adds to the map (step 3).",
    ) or rankings[0]
    channels = tiles.tile_channels(steps, ranking)
    maps = [steps.activation(int(k)) for k in channels]
    name = _name(result)
    titles = [f"#{k} · {name} = {steps.weights[k]:.2g}" for k in channels]
    tile_height = int(np.clip(1040 / max(1, len(maps)) * rows / cols, 50, 260)) + 22 + figures.COLORBAR_ROOM
    st.plotly_chart(figures.tiles_figure(maps, titles, tile_height), config={"displayModeBar": False}, key="tiles")
    shown = (
        f"Showing the {len(channels)} channels with the {ranking} out of {total}."
        if len(channels) < total
        else f"Showing all {total} channels, by {ranking}."
    )
    silent = sum(1 for m in maps if not np.any(m))
    if silent:
        shown += (
            f" {silent} of them {'is' if silent == 1 else 'are'} 0 everywhere: that detector did not fire on "
            "this image, so its weight adds nothing to the map."
        )
    low = min(0.0, min(float(m.min()) for m in maps))
    high = max(float(m.max()) for m in maps)
    st.caption(f"{shown} One colour scale for every tile: from dark ({low:.3g}) to yellow ({high:.3g}).")
    return channels


def weights(result: Result, shown: np.ndarray) -> None:
    """Step 2: the channel weights, all of them as sorted bars, with the formula and the class score.

    Args:
        result: The explanation.
        shown: Channels drawn as tiles in step 1 (their bars are darker).
    """
    steps = result.steps
    rows, cols = steps.cam.shape
    label = plain(result.target.label)
    formula, sentence = FORMULAS.get(
        result.method,
        ("", "This method turns the gradients of the {cells} cells into the channel's weight."),
    )
    symbol = r"w^{kc}_{ij}" if steps.elementwise else r"\alpha_k^c"
    _title(2, rf"The weights ${symbol}$: how much each channel matters for {label}")
    st.markdown(
        f"If a feature map got a little brighter, how much would the score $y^c$ of **{label}** change? "
        f"That is the gradient $\\partial y^c / \\partial A^k_{{ij}}$, one number per cell, computed by "
        f"backpropagation. {sentence.format(cells=rows * cols)}"
    )
    chart, numbers = st.columns([3, 2], gap="large")
    with chart:
        st.plotly_chart(
            figures.weights_figure(steps.weights, shown.tolist(), 300, _name(result)),
            config={"displayModeBar": False},
            key="weights",
        )
    with numbers:
        if formula:
            st.latex(formula)
        st.metric(
            SCORE_LABEL,
            f"{steps.score:.3f}",
            help=f"The network's raw score for {label}, before softmax turns the scores into "
            f"probabilities ({result.target.probability:.1%}).",
        )
        positive = int((steps.weights > 0).sum())
        negative = int((steps.weights < 0).sum())
        st.caption(
            f"$y^c$ is the network's raw score for **{label}**; softmax turns it into the probability "
            f"{result.target.probability:.1%}. {positive} channels have a positive weight (red), {negative} a "
            "negative one (blue); the black diamonds mark the channels shown as tiles in step 1."
        )


def weighted_sum(result: Result, settings: Settings) -> None:
    """Step 3: the weighted sum before the ReLU on a diverging scale, then after the ReLU."""
    steps = result.steps
    total = steps.num_channels
    label = plain(result.target.label)
    raise_ = score_verb(settings.method, past=False)
    lower = "raise" if raise_ == "lower" else "lower"
    if steps.elementwise:
        _title(3, r"The weighted sum $\sum_k w^{kc} \odot A^k$, then the ReLU")
        how = f"Each feature map is multiplied cell by cell by its weights, and the {total} results are added up."
    else:
        _title(3, r"The weighted sum $\sum_k \alpha_k^c A^k$, then the ReLU")
        how = f"Each feature map is multiplied by its weight, and the {total} results are added up, cell by cell."
    st.markdown(
        f"{how} Red cells {raise_} the score for **{label}**; blue cells {lower} it. "
        "The ReLU, $\\max(0, x)$, then keeps only the red part."
    )
    rows, cols = steps.cam.shape
    scale, value_range = figures.signed_scale(float(steps.weighted_sum.min()), float(steps.weighted_sum.max()))
    height = int(np.clip(480 * rows / cols, 120, 420)) + figures.COLORBAR_ROOM
    panels = (
        ("**Before the ReLU** (red = positive, blue = negative)", steps.weighted_sum, "sum", "before-relu"),
        ("**After the ReLU**: the raw map, negative cells set to 0", steps.cam, "map", "after-relu"),
    )
    for column, (title, values, label, key) in zip(st.columns(2, gap="large"), panels):
        column.markdown(title)
        column.plotly_chart(
            figures.grid_figure(values, height, label, scale, value_range), config={"displayModeBar": False}, key=key
        )
    negative = int((steps.weighted_sum < 0).sum())
    if negative:
        discarded = float(-steps.weighted_sum[steps.weighted_sum < 0].sum())
        kept = float(steps.cam.sum())
        low, high = value_range
        st.caption(
            f"{negative} of the {rows * cols} cells were negative and became 0: the ReLU discarded evidence "
            f"adding up to {discarded:.3g} and kept {kept:.3g}. White is 0; the deepest blue is the most negative "
            f"cell ({low:.2g}), the deepest red the most positive ({high:.3g}), so small negatives stay visible."
        )
    else:
        st.caption(
            f"None of the {rows * cols} cells is negative here, so the ReLU changes nothing. Less likely "
            "classes often have some: try them in step 5."
        )


def upsampling(result: Result, settings: Settings, image: np.ndarray, full_size: tuple[int, int]) -> None:
    """Step 4: divide by the maximum, enlarge to the image, colour and lay over it."""
    steps = result.steps
    rows, cols = steps.cam.shape
    width, height = full_size
    _title(4, "Enlarged to the image and laid over it")
    st.markdown(
        f"The map is divided by its largest value ({result.strength:.3g}) so that it runs from 0 to 1, "
        f"enlarged from {rows} × {cols} cells to the image's {width} × {height} pixels by smooth (bilinear) "
        f"interpolation, coloured and laid over the image at {settings.alpha:.0%} opacity: exactly the "
        "picture of the Explanation tab."
    )
    normalised = steps.cam / result.strength if result.strength > 0 else np.zeros_like(steps.cam)
    panel = figures.panel_height(full_size)
    grid, enlarged, combined = st.columns(3, gap="medium")
    with grid:
        st.markdown(f"**Divided by {result.strength:.3g}** ({rows} × {cols})")
        st.plotly_chart(
            figures.grid_figure(
                normalised, panel, "map", figures.colorscale(settings.colormap), (0.0, 1.0), (0, 0.25, 0.5, 0.75, 1)
            ),
            config={"displayModeBar": False},
            key="normalised",
        )
    with enlarged:
        st.markdown(f"**Enlarged** ({width} × {height})")
        st.plotly_chart(
            figures.heatmap_figure(result.raw_map, full_size, settings.colormap, panel, "map"),
            config={"displayModeBar": False},
            key="enlarged",
        )
    with combined:
        st.markdown(f"**Overlay** at {settings.alpha:.0%}")
        blended = overlay(image, result.heatmap_at(image.shape), settings.alpha, settings.colormap)
        st.plotly_chart(
            figures.image_figure(blended, full_size, panel), config={"displayModeBar": False}, key="teaching-overlay"
        )


def comparison(
    result: Result, settings: Settings, model: LoadedModel, image: np.ndarray, full_size: tuple[int, int]
) -> None:
    """Step 5: the weights and the map of another class, from its own cached explanation."""
    others = [p for p in choices.explainable(result, model) if p.index != result.target.index]
    if not others:
        return
    _title(5, "Another class, other weights")
    raise_ = score_verb(settings.method, past=False) + "s"
    lower = "raises" if raise_ == "lowers" else "lowers"
    st.markdown(
        "The feature maps of step 1 do not depend on the class: the forward pass is the same. Only the "
        "gradients, and so the weights, change — and with them the weighted sum of step 3, shown here over "
        f"the image (red {raise_} the class's score, blue {lower} it)."
    )
    by_index = {p.index: p for p in others}
    menu, _ = st.columns([1, 2])
    with menu:
        picked = st.selectbox(
            "Compare with class",
            list(by_index),
            format_func=lambda i: f"{by_index[i].label} — {by_index[i].probability:.1%}",
            key=f"compare-{settings.image.digest[:16]}-{settings.model}-{result.target.index}",
        )
    other = cache.explain(
        replace(settings, target=choices.class_target(settings, result, picked)), model, place="teaching-other",
        on_cancel=controls.use_default_method,
    )
    if other.steps is None:
        return
    first, second = result.target.label, other.target.label
    panel = figures.panel_height(full_size)
    both = np.concatenate([result.steps.weighted_sum.ravel(), other.steps.weighted_sum.ravel()])
    value_range = (float(both.min()), float(both.max()))
    scatter, left, right = st.columns(3, gap="medium")
    with scatter:
        st.markdown(f"**Weights**: {plain(first)} vs {plain(second)}")
        st.plotly_chart(
            figures.weights_comparison_figure(result.steps.weights, other.steps.weights, (first, second), panel),
            config={"displayModeBar": False},
            key="compare-weights",
        )
        flips = int((np.sign(result.steps.weights) != np.sign(other.steps.weights)).sum())
        spread = float(np.std(result.steps.weights) * np.std(other.steps.weights))
        correlation = (
            float(np.corrcoef(result.steps.weights, other.steps.weights)[0, 1]) if spread > 0 else float("nan")
        )
        st.caption(
            f"One dot per channel. On the dotted diagonal a channel matters equally to both classes. "
            f"{flips} of {result.steps.num_channels} channels change sign; correlation {correlation:.2f}."
        )
    for column, found in ((left, result), (right, other)):
        with column:
            st.markdown(f"**{plain(found.target.label)}** ({found.target.probability:.1%}), before the ReLU")
            st.plotly_chart(
                figures.signed_overlay_figure(image, found.steps.weighted_sum, value_range, full_size, panel, "sum"),
                config={"displayModeBar": False},
                key=f"compare-map-{'this' if found is result else 'other'}",
            )
            negative = int((found.steps.weighted_sum < 0).sum())
            st.caption(
                f"Score $y^c$ = {found.score:.3f}. {negative} of {found.steps.weighted_sum.size} cells negative "
                f"(blue). Both maps on the same colour scale."
            )
