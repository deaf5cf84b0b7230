"""Choosing the class to explain: by index or by name, per image of a batch, and the top-k predictions."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import ModelError, TargetError

__all__ = [
    "ACTIVATIONS",
    "Prediction",
    "Targets",
    "check_activation",
    "class_scores",
    "probabilities",
    "ranked_predictions",
    "resolve_class",
    "resolve_targets",
    "top_predictions",
]

ACTIVATIONS = ("softmax", "sigmoid")

Targets = int | Sequence[int] | Tensor | None
"""One class index per image of a batch (an int applies to all); ``None`` explains each image's top-1 class."""


class Prediction(NamedTuple):
    """One class with its probability."""

    index: int
    label: str
    probability: float


def resolve_class(target: int | str, categories: Sequence[str]) -> int:
    """Class index for an index or a case-insensitive class name (e.g. ``"tabby"``, ``"Espresso"``).

    Example: ``resolve_class("Tabby", model.categories)  # 281``.

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


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """``(N,)`` class index explained for each image of a batch, e.g. ``resolve_targets(None, logits)`` is the
    top-1 class of each row of ``logits`` ``(N, C)``.

    Raises:
        TargetError: the number of targets does not match the batch, or an index is out of range.
    """
    batch, classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    if isinstance(targets, int):
        idx = torch.full((batch,), targets, dtype=torch.long)
    else:
        idx = torch.as_tensor(targets, dtype=torch.long).flatten()
    if idx.numel() != batch:
        raise TargetError(f"Got {idx.numel()} targets for a batch of {batch} images; give one per image.")
    bad = idx[(idx < 0) | (idx >= classes)]
    if bad.numel():
        raise TargetError(f"Class index {int(bad[0])} is out of range; this model has {classes} classes (0-{classes - 1}).")
    return idx.to(logits.device)


def class_scores(output: object) -> Tensor:
    """``output`` of a model, checked to be class scores ``(batch, classes)``: ``class_scores(model(x))``.

    Raises:
        ModelError: the model returned anything else (a tuple, a feature map...).
    """
    if not isinstance(output, Tensor) or output.ndim != 2:
        raise ModelError("The model must return class scores of shape (batch, classes).")
    return output


def check_activation(activation: str) -> str:
    """``activation`` if it is one of :data:`ACTIVATIONS`: ``check_activation("sigmoid")  # "sigmoid"``.

    Raises:
        ModelError: any other value.
    """
    if activation not in ACTIVATIONS:
        raise ModelError(f"Unknown activation {activation!r}; choose softmax (single-label) or sigmoid (multi-label).")
    return activation


def probabilities(logits: Tensor, activation: str = "softmax") -> Tensor:
    """Class probabilities of logits ``(..., C)`` (one image's ``(C,)`` or a batch's ``(N, C)``), along the last
    dimension: softmax (single-label) or sigmoid (multi-label), e.g. ``probabilities(result.logits[0])``.

    Raises:
        ModelError: the activation is neither softmax nor sigmoid.
    """
    scores = logits.detach()
    scores = scores if scores.dtype == torch.float64 else scores.float()
    if check_activation(activation) == "sigmoid":
        return torch.sigmoid(scores)
    return torch.softmax(scores, dim=-1)


def top_predictions(
    logits: Tensor, categories: Sequence[str], k: int = 5, activation: str = "softmax"
) -> tuple[Prediction, ...]:
    """The ``k`` most probable classes of one image's logits ``(C,)``, by softmax or sigmoid probability.

    Example: ``top_predictions(trace.logits[0], model.categories, k=3)``.
    """
    return ranked_predictions(probabilities(logits, activation), categories, k)


def ranked_predictions(probs: Tensor, categories: Sequence[str], k: int = 5) -> tuple[Prediction, ...]:
    """The ``k`` most probable classes of one image's probabilities ``(C,)``, most probable first.

    Example: ``ranked_predictions(torch.tensor([0.2, 0.8]), ("cat", "dog"), k=1)  # (Prediction(1, "dog", 0.8),)``.
    """
    values, indices = probs.topk(min(k, probs.numel()))
    return tuple(
        Prediction(int(i), categories[int(i)], float(p)) for p, i in zip(values.tolist(), indices.tolist())
    )
