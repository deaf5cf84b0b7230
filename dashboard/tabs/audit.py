"""The Audit tab: a data set's audit (``gradcam audit``), read from the server's audits folder.

The strategies SpRAy found for each class (mean maps, size, accuracy, shortcut flags), then a filtered gallery
of the overlays, each one click from its full explanation in the other tabs (:mod:`dashboard.handoff`), and the
table as CSV. Only folders inside ``AUDITS`` can be opened: a user picks one by name
from a list, never types a path on the shared server.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from gradcam_core.audit_report import Audit, open_audit
from gradcam_core import heatmap_from_map
from gradcam_core.render import colorize, overlay
from gradcam_core.tables import spreadsheet_safe
from gradcam_core.units import plural

from .. import handoff
from ..guard import reported_errors
from ..page import Page
from ..text import plain

AUDITS = Path(os.environ.get("GRADCAM_AUDITS", Path(__file__).resolve().parents[2] / "audits"))
"""Where audit folders live on the server (``GRADCAM_AUDITS``); ``gradcam audit SOURCE --out AUDITS/NAME``."""
GALLERY = 24
COLUMNS = 4


def render(page: Page | None) -> None:
    """Pick an audit, then its strategies per class and a gallery of its images."""
    del page  # an audit is about a data set, not about the image on screen
    folders = audit_folders(AUDITS)
    if not folders:
        st.info(
            f"No audit on this server yet. Run `gradcam audit SOURCE --out {AUDITS}/NAME` to explain a data set; "
            "it appears here.",
            icon=":material/info:",
        )
        return
    name = st.selectbox("Audit", folders, format_func=plain, key="audit-folder")
    with reported_errors("reading the audit"):
        audit = opened(str(AUDITS / name), _modified(AUDITS / name))
        summary(audit)
        strategies(audit)
        gallery(audit)


def audit_folders(root: Path) -> list[str]:
    """Names of the audit folders directly inside ``root`` (those with an ``audit.json``), sorted."""
    if not root.is_dir():
        return []
    return sorted(child.name for child in root.iterdir() if (child / "audit.json").is_file())


def _modified(folder: Path) -> float:
    return max((path.stat().st_mtime for path in folder.rglob("*") if path.is_file()), default=0.0)


@st.cache_resource(show_spinner="Reading the audit…", max_entries=4, ttl=3600)
def opened(folder: str, modified: float) -> Audit:
    """The audit in ``folder``, read once per version (``modified``) and shared read-only."""
    return open_audit(folder)


def summary(audit: Audit) -> None:
    """How many images, how many failed, how many possible shortcuts."""
    images, failed, flagged = st.columns(3)
    images.metric("Images explained", len(audit.images))
    failed.metric("Files that could not be read", len(audit.failed))
    flagged.metric("Possible shortcuts", len(audit.flagged()))
    settings = audit.settings
    st.caption(
        f"Model {plain(settings.get('model_title', settings.get('model', '?')))}, method {plain(settings.get('method', '?'))}, layer "
        f"{plain(settings.get('layer', '?'))}; target rule: {plain(settings.get('target', '?'))} class; source: {plain(_source(settings.get('source', '?')))}."
    )


def _source(description: str) -> str:
    """``"ImageFolder /srv/data/xrays"`` as ``"ImageFolder xrays"``: the server's folders stay off the page."""
    kind, _, where = description.partition(" ")
    return f"{kind} {Path(where).name}" if where else kind


def strategies(audit: Audit) -> None:
    """Per class, its SpRAy clusters: the mean map, size, accuracy and why one may be a shortcut."""
    st.subheader("Strategies per class (SpRAy)", anchor=False)
    classes = sorted({cluster.target for cluster in audit.clusters})
    if not classes:
        st.info("The audit has no clusters yet (too few images per class).", icon=":material/info:")
        return
    target = st.selectbox("Class", classes, format_func=plain, key="audit-class")
    clusters = [cluster for cluster in audit.clusters if cluster.target == target]
    for column, cluster in zip(st.columns(COLUMNS), clusters[:COLUMNS]):  # equal sizes, however many
        column.image(colorize(cluster.mean_map.astype(np.float32), "jet"), use_container_width=True)
        accuracy = "no labels" if cluster.accuracy is None else f"{cluster.accuracy:.0%} correct"
        column.markdown(f"**Cluster {cluster.index + 1}** · {plural(cluster.size, 'image')} · {accuracy}")
        if cluster.flags:
            column.warning(
                "Possible shortcut: the heat sits " + ", ".join(_where(flag) for flag in cluster.flags) + ".",
                icon=":material/flag:",
            )
    st.caption(
        "Each picture is the mean map of one group of images the model explains alike; red is where their heat "
        "is. A group hot on a border, a corner or outside the object may be using a shortcut (a marker, a ruler)."
    )


def _where(flag: str) -> str:
    kind, _, detail = flag.partition(":")
    return {"border": "on the image border", "outside": "outside the object"}.get(
        kind, f"in the {detail.replace('_', ' ')} corner"
    )


def gallery(audit: Audit) -> None:
    """Thumbnails of the images, filtered and sorted, each one click from its explanation; the table as CSV."""
    st.subheader("Images", anchor=False)
    images = audit.images
    shown = chosen_images(audit)
    st.caption(f"{len(shown)} of {len(images)} images; the first {min(len(shown), GALLERY)} are shown.")
    if note := st.session_state.pop(handoff.NOTE, None):
        st.error(plain(note), icon=":material/error:")
    for start in range(0, min(len(shown), GALLERY), COLUMNS):
        for cell, position in zip(st.columns(COLUMNS), shown.index[start : start + COLUMNS]):
            row = images.loc[position]
            cell.image(overlaid(audit, int(position)), use_container_width=True)
            verdict = "" if pd.isna(row.get("correct")) else (" · correct" if row["correct"] else " · wrong")
            cell.caption(f"{plain(Path(str(row['path'])).name)} · {plain(row.get('prediction', ''))}{verdict}")
            cell.button(
                "Explain", key=f"audit-explain-{position}", on_click=handoff.open_audited, args=(audit, int(position)),
                icon=":material/zoom_in:", help="Open this image in the Explanation tab with the audit's model, "
                "method, layer and class.",
            )
    st.download_button(
        "Table (CSV)", table_csv(shown), file_name="audit.csv", mime="text/csv", icon=":material/table:",
        on_click="ignore", key="audit-csv",
    )


SORTS: dict[str, tuple[str, bool] | None] = {
    "The audit's order": None,
    "Least sure first (probability of the explained class)": ("target_probability", True),
    "Most heat on the border first": ("border_share", False),
    "Most heat in a corner first": ("corner_share", False),
}
"""How the gallery can be sorted: a column of the images and whether ascending (``None``: as audited)."""


def chosen_images(audit: Audit) -> pd.DataFrame:
    """The images the filters keep (class explained, its SpRAy cluster, correct or wrong, possible shortcuts,
    group), in the order picked."""
    images = shown = audit.images
    top, bottom = st.columns(3), st.columns(3)
    classes = sorted(str(value) for value in images["target"].dropna().unique()) if "target" in images else []
    target = top[0].selectbox("Class", ["all", *classes], format_func=plain, key="audit-gallery-class")
    numbers: list[int] = []
    if target != "all":
        shown = shown[shown["target"].astype(str) == target]
        numbers = sorted(int(c) for c in shown["cluster"].unique() if c >= 0) if "cluster" in shown else []
    cluster = top[1].selectbox(
        "Cluster", ["all", *numbers], format_func=lambda c: c if c == "all" else f"Cluster {c + 1}",
        key=f"audit-gallery-cluster-{target}", disabled=target == "all",
        help="Pick a class first: each class has its own clusters." if target == "all" else None,
    )
    if cluster != "all":
        shown = shown[shown["cluster"] == cluster]
    outcome = top[2].segmented_control("Show", ("All", "Correct", "Wrong"), default="All", key="audit-outcome")
    if outcome in ("Correct", "Wrong") and "correct" in images:
        shown = shown[shown["correct"] == (outcome == "Correct")]
    if bottom[0].toggle("Possible shortcuts only", key="audit-flagged") and "flagged" in shown:
        shown = shown[shown["flagged"].fillna(False).astype(bool)]
    order = bottom[1].selectbox("Sort by", list(SORTS), key="audit-sort")
    groups = [column for column in audit.settings.get("group_columns", []) if column in images]
    if groups:
        column = bottom[2].selectbox("Group by", groups, format_func=plain, key="audit-group")
        values = sorted(str(value) for value in images[column].dropna().unique())
        picked = bottom[2].selectbox("Value", ["all", *values], format_func=plain, key="audit-group-value")
        if picked != "all":
            shown = shown[shown[column].astype(str) == picked]
    if SORTS[order] is not None and SORTS[order][0] in shown:
        column, ascending = SORTS[order]
        shown = shown.sort_values(column, ascending=ascending, kind="stable", na_position="last")
    return shown


def overlaid(audit: Audit, position: int) -> np.ndarray:
    """The thumbnail of ``images`` row ``position`` with its map over it (jet, half opacity)."""
    picture = np.asarray(audit.thumbnail(position))
    raw_map = np.asarray(audit.images["map"].iat[position], dtype=np.float32)
    return overlay(picture, heatmap_from_map(raw_map, picture.shape[:2]), 0.5, "jet")


def table_csv(images: pd.DataFrame) -> str:
    """The images' facts as CSV, every text cell safe to open in a spreadsheet (no map, no thumbnail)."""
    columns = [column for column in images.columns if column not in ("map", "thumbnail")]
    table = images[columns].copy()
    for column in table.columns:
        if table[column].dtype == object:
            table[column] = table[column].map(lambda value: spreadsheet_safe(str(value)) if pd.notna(value) else "")
    return table.to_csv(index=False)
