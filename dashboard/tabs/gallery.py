"""The Gallery tab: every uploaded image (or the built-in samples) explained with the same model and settings.

Each image is its own cached explanation, exactly as in the Explanation tab, so opening one of them there
later costs nothing. A CSV of the predictions and peaks is one click away. A segmentation model's class is
explained over the region it predicts in each image; an image where it predicts none of that class says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import streamlit as st

from gradcam_core import LoadedModel, heatmap_from_map
from gradcam_core.render import overlay
from gradcam_core.tables import csv_table

from .. import cache, choices, controls
from ..cache import Result
from ..page import Page
from ..guard import reported_errors
from ..medical import as_picture
from ..pictures import shrink
from ..settings import ImageInput, Settings
from ..text import plain

MAX_IMAGES = 24
COLUMNS = 4
THUMBNAIL_SIDE = 320


def render(page: Page) -> None:
    """The gallery of the uploads (the samples when there are none), explained with the page's settings."""
    settings, model, uploads = page.settings, page.model, page.uploads
    images = distinct(uploads) or samples()
    source = "uploaded images" if uploads else "built-in samples (upload several images to see yours here)"
    if len(images) < len(uploads):
        st.caption(f"{len(uploads) - len(images)} repeated upload(s) of the same file shown once.")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        same_class = st.toggle(
            "Explain the class chosen in the sidebar in every image",
            key="gallery-same-class",
            help="Off: each image's own top class.",
            disabled=settings.target is None,
        )
    with right:
        common = st.toggle("Common scale", value=True, key="gallery-common", help="One colour scale for all maps.")
    st.caption(f"{len(images[:MAX_IMAGES])} {source}; layer, method and colours as in the sidebar.")
    if len(images) > MAX_IMAGES:
        st.warning(f"Showing the first {MAX_IMAGES} of {len(images)} images.", icon=":material/warning:")
    rows = explained(images[:MAX_IMAGES], settings, model, same_class)
    if not rows:
        return
    scale = (max(found.strength for _, found in rows) or None) if common else None
    if scale:
        st.caption(f"Common scale: the top colour is {scale:.3g}, the strongest peak of these maps (raw units).")
    for start in range(0, len(rows), COLUMNS):
        for column, (image, found) in zip(st.columns(COLUMNS, gap="small"), rows[start : start + COLUMNS]):
            with column:
                thumbnail(image, found, settings, scale)
    st.download_button(
        "Predictions CSV",
        lambda: csv_table((image.name, found) for image, found in rows),
        file_name="gallery.csv",
        mime="text/csv",
        icon=":material/table:",
        on_click="ignore",
        key="gallery-csv",
    )


def distinct(images: Sequence[ImageInput]) -> list[ImageInput]:
    """``images`` without repeats of the same content (first one kept)."""
    first: dict[str, ImageInput] = {}
    for image in images:
        first.setdefault(image.digest, image)
    return list(first.values())


def samples() -> list[ImageInput]:
    """The built-in sample images."""
    return [ImageInput.from_bytes(title, (controls.ASSETS / name).read_bytes()) for name, title in controls.SAMPLES.items()]


def explained(
    images: Sequence[ImageInput], settings: Settings, model: LoadedModel, same_class: bool
) -> list[tuple[ImageInput, Result]]:
    """Each readable image with its explanation; an unreadable one gets its one-sentence error instead.

    A DICOM file's picture is named after its modality and frame, never its file, plus its place among the
    uploads (``"CT image, frame 1 of 1 · upload 3"``) so that several scans can be told apart.
    """
    rows = []
    for number, image in enumerate(images):
        with reported_errors("explaining an image of the gallery", about=image.name):
            picture = as_picture(image)
            if picture is not image:
                picture = replace(picture, name=f"{picture.name} · upload {number + 1}")
            chosen = replace(settings, image=picture, target=settings.target if same_class else None)
            if missing_region(chosen, model, f"gallery-{number}"):
                st.caption(f"{plain(picture.name)}: the model predicts no pixel of "
                           f"{plain(model.categories[chosen.target])} here, so that region cannot be explained.")
                continue
            found = cache.explain(chosen, model, place=f"gallery-{number}", on_cancel=controls.use_default_method)
            rows.append((picture, found))
    return rows


def missing_region(settings: Settings, model: LoadedModel, place: str) -> bool:
    """Whether ``settings`` ask a segmentation model for a class it predicts nowhere in the image, so that its
    region is empty (read from the image's default explanation, itself cached)."""
    if not model.segmentation or not isinstance(settings.target, int):
        return False
    own = cache.explain(replace(settings, target=None), model, place=place, on_cancel=controls.use_default_method)
    return settings.target not in choices.explainable_classes(own, model)


def thumbnail(image: ImageInput, found: Result, settings: Settings, scale: float | None) -> None:
    """The overlay of one image, its top class and the peak of its map."""
    small = shrink(cache.display_image(image.digest, image.data), THUMBNAIL_SIDE)
    heat = heatmap_from_map(found.raw_map, small.shape[:2], scale)
    st.image(overlay(small, heat, settings.alpha, settings.colormap), width="stretch")
    top = found.predictions[0]
    explained_class = "" if found.target.index == top.index else f" · map: {plain(found.target.label)}"
    st.caption(
        f"**{plain(image.name)}**  \n{plain(top.label)} {top.probability:.1%}{explained_class} · "
        f"peak {found.strength:.3g}"
    )
