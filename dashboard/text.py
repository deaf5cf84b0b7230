"""Names from users and files shown as text, never as markup.

Class labels, file names, layer names, model titles and DICOM values come from files that someone else wrote.
Streamlit renders Markdown (links, images, HTML-like tags, maths, colours, and bare URLs turned into links) and
Plotly renders a subset of HTML (links among it) in its labels and hover texts. These helpers make such a name
inert in each: it is shown exactly as written, and nothing in it can make a browser fetch or link anything.
"""

from __future__ import annotations

import html
import re

import gradcam_core as core

__all__ = ["map_subject", "method_title", "plain", "plotly_text", "score_verb"]

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_LINK_START = re.compile(r"(?i)(:(?=/)|www(?=\.)|@)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
WORD_JOINER = "\u2060"
"""Invisible, zero-width, and not part of any URL: placed inside ``://``, ``www.`` and around ``@``, it stops
Markdown's bare-URL, ``www.`` and e-mail autolinks from forming (backslash escapes do not: the link is detected
in the text). Other names (``scan.dcm``) are left untouched, so they can be searched and copied as they are."""


def plain(text: object) -> str:
    """``text`` as Markdown that shows exactly these characters: every ASCII punctuation character escaped, no
    autolink, control characters and line breaks as one space.

    Example::

        st.markdown(f"**{plain(label)}**")   # a label "![x](http://host/p.png)" stays that text
    """
    flat = _CONTROL.sub(" ", str(text))
    joined = _LINK_START.sub(rf"\1{WORD_JOINER}", flat).replace("@", f"{WORD_JOINER}@")
    return _PUNCTUATION.sub(r"\\\1", joined)


def plotly_text(text: object) -> str:
    """``text`` for a Plotly label, title or hover text: HTML-escaped (no tag, no link) and with ``%`` written as
    an entity, so it cannot pull values into a hover template.

    Example::

        go.Bar(y=[plotly_text(label) for label in labels])
    """
    flat = _CONTROL.sub(" ", str(text))
    return html.escape(flat, quote=True).replace("%", "&#37;")


def method_title(name: str) -> str:
    """The title of the registered method ``name`` (``"gradcam"`` -> ``"Grad-CAM"``), or ``name`` itself."""
    method = core.METHODS.get(name)
    return method.title if method is not None else name


def map_subject(method: str, label: str) -> str:
    """What the map of ``method`` shows, as Markdown: ``"evidence for **tabby**"``, ``"evidence against **tabby**"``
    or, for a class-agnostic method, the layer's dominant pattern (``label`` is plain text)."""
    facts = core.METHODS.get(method)
    if facts is not None and not facts.class_specific:
        return "the dominant pattern of the layer's features (the same for every class)"
    side = "against" if facts is not None and facts.counter_evidence else "for"
    return f"evidence {side} **{plain(label)}**"


def score_verb(method: str, past: bool = True) -> str:
    """How the map's regions act on the score: ``"raised"``, or ``"lowered"`` for counter-evidence."""
    facts = core.METHODS.get(method)
    lowers = facts is not None and facts.counter_evidence
    return ("lowered" if lowers else "raised") if past else ("lower" if lowers else "raise")
