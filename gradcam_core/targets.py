"""Choosing the class to explain: by index or by name, and the top-k predictions."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import TargetError

__all__ = ["ACTIVATIONS", "Prediction", "probabilities", "resolve_class", "top_predictions"]

ACTIVATIONS = ("softmax", "sigmoid")


class Prediction(NamedTuple):
    """One class with its probability."""

    index: int
    label: str
    probability: float


def resolve_class(target: int | str, categories: Sequence[str]) -> int:
    """Class index for an index or a case-insensitive class name (e.g. ``"tabby"``, ``"Espresso"``).

    Raises:
        TargetError: the index is out of range or no class has that name.
    """
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target.strip())
    if isinstance(target, int) and not isinstance(target, bool):
        if 0 <= target < len(categories):
            return target
        raise TargetError(f"Class index {target} is out of range; this model has {len(categories)} classes.")
    if not isinstance(target, str):
        raise TargetError(f"A class is given by index or name, not by {type(target).__name__}.")
    wanted = target.strip().casefold()
    for index, label in enumerate(categories):
        if label.casefold() == wanted:
            return index
    close = difflib.get_close_matches(wanted, [c.casefold() for c in categories], n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise TargetError(f"No class is named {target!r}{hint}.")


def probabilities(logits: Tensor, activation: str = "softmax") -> Tensor:
    """Class probabilities of logits ``(..., C)`` (one image's ``(C,)`` or a batch's ``(N, C)``), along the last
    dimension: softmax (single-label) or sigmoid (multi-label)."""
    scores = logits.detach()
    scores = scores if scores.dtype == torch.float64 else scores.float()
    if activation == "sigmoid":
        return torch.sigmoid(scores)
    if activation == "softmax":
        return torch.softmax(scores, dim=-1)
    raise ValueError(f"Unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")


def top_predictions(
    logits: Tensor, categories: Sequence[str], k: int = 5, activation: str = "softmax"
) -> tuple[Prediction, ...]:
    """The ``k`` most probable classes of one image's logits ``(C,)``, by softmax or sigmoid probability."""
    probs = probabilities(logits, activation)
    values, indices = probs.topk(min(k, probs.numel()))
    return tuple(
        Prediction(int(i), categories[int(i)], float(p)) for p, i in zip(values.tolist(), indices.tolist())
    )
