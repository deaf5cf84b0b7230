"""How the engine writes quantities in its messages: file sizes, megapixels, counted nouns."""

from __future__ import annotations

__all__ = ["format_megapixels", "format_size", "plural"]

_UNITS = ((2**30, "GB"), (2**20, "MB"), (2**10, "KB"))


def format_size(size: int) -> str:
    """A byte count in binary units with at most one decimal, e.g. ``format_size(3 * 2**19)  # "1.5 MB"``.

    Exact multiples of the unit drop the decimal (``"200 MB"``), others keep it, so a file just over a limit
    never reads as the limit itself (``"25.0 MB"`` against ``"25 MB"``); below 1 KB the count is exact
    (``"1000 bytes"``).
    """
    for unit, name in _UNITS:
        if size >= unit:
            return f"{size // unit} {name}" if size % unit == 0 else f"{size / unit:.1f} {name}"
    return f"{size} bytes"


def format_megapixels(pixels: int) -> str:
    """A pixel count in megapixels, e.g. ``format_megapixels(50_000_000)  # "50"``, ``(1_500_000)  # "1.5"``."""
    value = pixels / 1_000_000
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, with an ``s`` unless there is one, e.g. ``plural(2, "key")  # "2 keys"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
