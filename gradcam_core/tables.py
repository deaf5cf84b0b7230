"""One CSV row per explained image: predictions and the map's peak, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from .explain import ExplanationSummary

__all__ = ["COLUMNS", "csv_table", "spreadsheet_safe"]

COLUMNS = (
    "image", "model", "layer", "method", "top_class", "top_probability", "class", "class_probability", "score",
    "peak_evidence",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_table(rows: Iterable[tuple[str, ExplanationSummary]]) -> str:
    """CSV text with a header (``COLUMNS``) and one row per ``(image name, explanation)`` (or its summary).

    Example: ``Path("summary.csv").write_text(csv_table([("cat.jpg", explain("cat.jpg"))]))``.

    Every text cell (file, model, layer, method and class names: a custom model is named after its weights
    file) goes through :func:`spreadsheet_safe`; the numbers are written by us.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # csv quotes a cell holding "\n" but not one holding a lone "\r", at which spreadsheets start a new row:
    # the rest of a file name would become a row of its own, first cell unprotected. Such rows are quoted whole.
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(COLUMNS)
    for name, found in rows:
        top = found.predictions[0]
        texts = [spreadsheet_safe(str(text)) for text in (name, found.model, found.layer, found.method)]
        row = [
            *texts,
            spreadsheet_safe(top.label), f"{top.probability:.6f}",
            spreadsheet_safe(found.target.label), f"{found.target.probability:.6f}",
            f"{found.score:.6f}", f"{found.strength:.6g}",
        ]
        (quoted if any("\r" in cell for cell in row) else writer).writerow(row)
    return buffer.getvalue()


def spreadsheet_safe(text: str) -> str:
    """``text`` made inert for spreadsheets: a leading ``= + - @`` (or tab, CR) would start a formula.

    Example: ``spreadsheet_safe("=SUM(A1)")  # "'=SUM(A1)"``.
    """
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
