"""What Markdown made by ``dashboard.text.plain`` reads as on the page, for assertions on AppTest elements."""

from __future__ import annotations

import re

from dashboard.text import WORD_JOINER


def shown(source: str) -> str:
    """``source`` without Markdown's backslash escapes and the word joiners that stop autolinks."""
    return re.sub(r"\\(.)", r"\1", source).replace(WORD_JOINER, "")
