"""What a map explains: objectives, functions from the model's output to one score per image.

An objective turns the model's output into the score ``(N,)`` whose gradient the CAM methods follow, and into a
probability ``(N,)`` that Score-CAM and results read. Built in::

    ClassScore(281)                         # a class's logit (what an int target means)
    WeightedClasses({2: 1.0, 5: 0.5})       # sum of weight * logit, e.g. every finding of a chest model
    BinaryLogit(positive=False)             # a single-logit model: evidence for the negative class
    RegionScore(1, mask)                    # segmentation: class 1's logits summed over a region

A torchvision segmentation model returns a dict; its ``"out"`` entry is the output (:func:`model_output`, the
one rule). A segmentation output is ``(N, C, H, W)``: one score per class and pixel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ModelError, TargetError
from .targets import Targets, check_activation, probabilities, resolve_targets

__all__ = [
    "BinaryLogit",
    "ClassScore",
    "Objective",
    "RegionScore",
    "WeightedClasses",
    "as_objective",
    "class_probabilities",
    "default_objective",
    "is_segmentation",
    "model_output",
    "predicted_mask",
]

_CLASS_SCORES = "The model must return class scores of shape (batch, classes)."
_SEGMENTATION = "The model must return segmentation scores of shape (batch, classes, height, width)."


def model_output(output: object) -> Tensor:
    """The tensor a model's output holds: itself, or a mapping's ``"out"`` entry (torchvision segmentation).

    Example: ``model_output(fcn(x)).shape  # (N, C, H, W)``.

    Raises:
        ModelError: the output is neither a tensor nor a mapping with a tensor ``"out"``.
    """
    if isinstance(output, Mapping):
        output = output.get("out")
    if not isinstance(output, Tensor):
        raise ModelError("The model must return class scores as a tensor, or a dict holding them under 'out'.")
    return output


def is_segmentation(output: object) -> bool:
    """Whether a model's output holds one score per class and pixel ``(N, C, H, W)``: ``is_segmentation(fcn(x))``."""
    return model_output(output).ndim == 4


def predicted_mask(output: object, index: int) -> Tensor:
    """``(N, H, W)`` bool: the pixels a segmentation output labels ``index`` (its arg-max).

    Example: ``predicted_mask(unet(x), 1).sum()  # pixels called class 1``.
    """
    scores = _segmentation(output)
    _check_index(index, scores.shape[1])
    if scores.shape[1] == 1:  # one channel is a logit: positive means the class
        return scores[:, 0] > 0
    return scores.argmax(dim=1) == index


def class_probabilities(output: object, activation: str = "softmax") -> Tensor:
    """``(N, C)`` probability of each class: a classifier's, or a segmentation's mean over the pixels.

    A single output (a binary model's logit, or one channel of a segmentation) is read with the sigmoid,
    whatever ``activation`` says. Example: ``class_probabilities(fcn(x))[0]  # share of the image per class``.
    """
    scores = model_output(output)
    probs = _probabilities(scores, activation, dim=1)
    return probs.mean(dim=(2, 3)) if probs.ndim == 4 else probs


class Objective(ABC):
    """A function of the model's output: ``objective(output) -> (N,)`` scores, differentiable.

    Subclasses are frozen dataclasses; see the module docstring for the built-in ones.
    """

    @abstractmethod
    def __call__(self, output: object) -> Tensor:
        """``(N,)`` score of each image, before any softmax (the gradient methods follow it)."""

    @abstractmethod
    def probability(self, output: object, activation: str = "softmax") -> Tensor:
        """``(N,)`` the score as a probability (read by Score-CAM on masked inputs and shown in results)."""

    @abstractmethod
    def classes(self, batch: int) -> Tensor:
        """``(N,)`` long: the class each image's score is about (``CamTrace.targets``)."""

    @abstractmethod
    def label(self, categories: Sequence[str]) -> str:
        """What is explained, for people: ``"tabby"``, ``"effusion + 0.5 × nodule"``, ``"tumour (region)"``."""

    def for_image(self, image: int) -> Objective:
        """The objective of image ``image`` alone, applied to every row of a batch (Score-CAM's masked copies)."""
        return self


@dataclass(frozen=True)
class ClassScore(Objective):
    """The logit of one class, or of one class per image: ``ClassScore(281)``, ``ClassScore((3, 7))``.

    Its probability is the class's softmax (or sigmoid, for a multi-label model) probability.
    """

    index: int | tuple[int, ...]

    def __call__(self, output: object) -> Tensor:
        scores = _classifier(output)
        return scores.gather(1, self._indices(scores)[:, None]).squeeze(1)

    def probability(self, output: object, activation: str = "softmax") -> Tensor:
        scores = _classifier(output)
        probs = probabilities(scores, activation)  # as before: no sigmoid rule for a one-class classifier
        return probs.gather(1, self._indices(scores)[:, None]).squeeze(1)

    def classes(self, batch: int) -> Tensor:
        if isinstance(self.index, int):
            return torch.full((batch,), self.index, dtype=torch.long)
        return torch.tensor(self.index, dtype=torch.long)

    def label(self, categories: Sequence[str]) -> str:
        return categories[int(self.classes(1)[0])]

    def for_image(self, image: int) -> ClassScore:
        return self if isinstance(self.index, int) else ClassScore(self.index[image])

    def _indices(self, scores: Tensor) -> Tensor:
        index = self.index if isinstance(self.index, int) else list(self.index)
        return resolve_targets(index, scores.detach())


@dataclass(frozen=True, init=False)
class WeightedClasses(Objective):
    """``sum_c weight_c * logit_c``: ``WeightedClasses({2: 1.0, 5: 1.0})`` explains findings 2 and 5 together.

    Its probability is the weighted mean of the classes' probabilities, ``sum_c w_c p_c / sum_c |w_c|`` (for
    positive weights in [0, 1], and ``p_c`` for a single class whatever its weight).

    Attributes:
        weights: ``((index, weight), ...)`` sorted by index; a mapping is accepted.
    """

    weights: tuple[tuple[int, float], ...]

    def __init__(self, weights: Mapping[int, float] | Sequence[tuple[int, float]]) -> None:
        pairs = dict(weights.items() if isinstance(weights, Mapping) else weights)
        if not pairs:
            raise TargetError("A weighted combination of classes needs at least one class.")
        if not any(float(w) for w in pairs.values()):
            raise TargetError("A weighted combination of classes needs at least one weight that is not zero.")
        object.__setattr__(self, "weights", tuple(sorted((int(i), float(w)) for i, w in pairs.items())))

    def __call__(self, output: object) -> Tensor:
        return self._combine(_classifier(output))

    def probability(self, output: object, activation: str = "softmax") -> Tensor:
        scores = _classifier(output)
        total = sum(abs(w) for _, w in self.weights)
        return self._combine(_probabilities(scores, activation, dim=1)) / total

    def classes(self, batch: int) -> Tensor:
        heaviest = max(self.weights, key=lambda pair: abs(pair[1]))[0]
        return torch.full((batch,), heaviest, dtype=torch.long)

    def label(self, categories: Sequence[str]) -> str:
        return " + ".join(
            categories[i] if w == 1 else f"{w:g} × {categories[i]}" for i, w in self.weights
        )

    def _combine(self, values: Tensor) -> Tensor:
        for index, _ in self.weights:
            _check_index(index, values.shape[1])
        indices = torch.tensor([i for i, _ in self.weights], device=values.device)
        weights = torch.tensor([w for _, w in self.weights], dtype=values.dtype, device=values.device)
        return (values.index_select(1, indices) * weights).sum(dim=1)


@dataclass(frozen=True)
class BinaryLogit(Objective):
    """The single logit of a binary model, or its negative: ``BinaryLogit(positive=False)``.

    Positive evidence raises the logit, negative evidence lowers it (the map of ``positive=False`` is the
    counterfactual map of ``positive=True``). Its probability is ``sigmoid(±logit)``, whatever the activation.
    """

    positive: bool = True

    def __call__(self, output: object) -> Tensor:
        logit = _single_logit(output)
        return logit if self.positive else -logit

    def probability(self, output: object, activation: str = "softmax") -> Tensor:
        return torch.sigmoid(_as_float(self(output).detach()))

    def classes(self, batch: int) -> Tensor:
        return torch.zeros(batch, dtype=torch.long)

    def label(self, categories: Sequence[str]) -> str:
        name = categories[0] if categories else "positive"
        return name if self.positive else f"not {name}"


@dataclass(frozen=True, eq=False)
class RegionScore(Objective):
    """Segmentation: class ``index``'s logits summed over a region, ``RegionScore(1, predicted_mask(out, 1))``.

    "Why did the model call this region class ``index``?" The mask is ``(H, W)`` (every image) or ``(N, H, W)``
    (one per image), bool or 0/1; at another size than the output's it is resized with nearest neighbours.
    Its probability is the class's mean probability over the region (softmax over the classes, or sigmoid for
    a multi-label or one-channel output).

    Raises:
        TargetError: the mask is not 2-D or 3-D, or selects no pixel.
    """

    index: int
    mask: Tensor

    def __post_init__(self) -> None:
        mask = torch.as_tensor(self.mask).detach()
        if mask.ndim not in (2, 3):
            raise TargetError(f"A region mask must be (height, width) or (batch, height, width), not {mask.ndim}-D.")
        mask = mask.bool() if mask.dtype == torch.bool else mask != 0
        if not bool(mask.flatten(-2).any(dim=-1).all()):
            raise TargetError("The region selects no pixel; draw a region or pick a class the model predicts.")
        object.__setattr__(self, "mask", mask)

    def __call__(self, output: object) -> Tensor:
        scores = _segmentation(output)
        _check_index(self.index, scores.shape[1])
        return (scores[:, self.index] * self._mask_for(scores)).sum(dim=(1, 2))

    def probability(self, output: object, activation: str = "softmax") -> Tensor:
        scores = _segmentation(output)
        _check_index(self.index, scores.shape[1])
        mask = self._mask_for(scores)
        probs = _probabilities(scores, activation, dim=1)[:, self.index]
        return (probs * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))

    def classes(self, batch: int) -> Tensor:
        return torch.full((batch,), self.index, dtype=torch.long)

    def label(self, categories: Sequence[str]) -> str:
        return f"{categories[self.index]} (region)"

    def for_image(self, image: int) -> RegionScore:
        return self if self.mask.ndim == 2 else RegionScore(self.index, self.mask[image])

    def region(self, size: tuple[int, int]) -> Tensor:
        """The mask ``(N or 1, height, width)`` bool at ``size`` (nearest): ``score.region((224, 224))``."""
        mask = self.mask if self.mask.ndim == 3 else self.mask[None]
        if tuple(mask.shape[1:]) == tuple(size):
            return mask
        return torch.nn.functional.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0

    def _mask_for(self, scores: Tensor) -> Tensor:
        """The mask ``(N or 1, H, W)`` at the output's size, in its dtype."""
        batch, _, height, width = scores.shape
        mask = self.region((height, width))
        if mask.shape[0] not in (1, batch):
            raise TargetError(f"Got {mask.shape[0]} region masks for a batch of {batch} images; give one per image.")
        return mask.to(device=scores.device, dtype=scores.dtype)


def default_objective(output: object, activation: str = "softmax") -> Objective:
    """What is explained when no target is given: each image's top-1 class; for a single-logit model its
    logit; for a segmentation, the region a class is predicted in: the class of highest mean probability (over
    the pixels and the batch) among those predicted somewhere in every image.

    Example: ``default_objective(fcn(x))  # RegionScore(top class, predicted_mask(...))``.
    """
    scores = model_output(output)
    if scores.ndim == 4:
        mean = class_probabilities(scores, activation).mean(dim=0)
        shown = [predicted_mask(scores, c).flatten(1).any(dim=1).all() for c in range(scores.shape[1])]
        top = int(torch.where(torch.stack(shown), mean, torch.full_like(mean, -1.0)).argmax())
        return RegionScore(top, predicted_mask(scores, top))
    if scores.ndim == 2 and scores.shape[1] == 1:
        return BinaryLogit(True)
    return ClassScore(tuple(resolve_targets(None, _classifier(scores).detach()).tolist()))


def as_objective(targets: Targets | Objective, output: object, activation: str = "softmax") -> Objective:
    """The objective ``targets`` means for this output: itself, the default (``None``), a class per image of a
    classifier, or a class's predicted region of a segmentation.

    Example: ``as_objective(1, unet(x))  # RegionScore(1, predicted_mask(unet(x), 1))``.

    Raises:
        TargetError: a class is out of range, or the number of targets does not match the batch.
        ModelError: the output is neither class scores nor a segmentation.
    """
    check_activation(activation)
    if isinstance(targets, Objective):
        return targets
    if targets is None:
        return default_objective(output, activation)
    scores = model_output(output)
    if scores.ndim == 4:
        if not isinstance(targets, int):
            raise TargetError("A segmentation is explained for one class at a time; give one class index.")
        return RegionScore(targets, predicted_mask(scores, targets))
    return ClassScore(tuple(resolve_targets(targets, _classifier(scores).detach()).tolist()))


def _classifier(output: object) -> Tensor:
    scores = model_output(output)
    if scores.ndim != 2:
        raise ModelError(_CLASS_SCORES)
    return scores


def _segmentation(output: object) -> Tensor:
    scores = model_output(output)
    if scores.ndim != 4:
        raise ModelError(_SEGMENTATION)
    return scores


def _single_logit(output: object) -> Tensor:
    scores = _classifier(output)
    if scores.shape[1] != 1:
        raise TargetError(
            f"A binary logit needs a model with one output, not {scores.shape[1]}; explain a class instead."
        )
    return scores[:, 0]


def _check_index(index: int, classes: int) -> None:
    if not 0 <= index < classes:
        raise TargetError(f"Class index {index} is out of range; this model has {classes} classes (0-{classes - 1}).")


def _as_float(values: Tensor) -> Tensor:
    return values if values.dtype == torch.float64 else values.float()


def _probabilities(scores: Tensor, activation: str, dim: int) -> Tensor:
    """Probabilities along ``dim``; a single channel is a logit and gets the sigmoid."""
    if scores.shape[dim] == 1:
        return torch.sigmoid(_as_float(scores.detach()))
    return probabilities(scores.movedim(dim, -1), activation).movedim(-1, dim)
