"""Pointing game on composites of the sample images: does each class's map point at its own object?

Run with ``python -m benchmarks.localisation`` (under a minute on an idle machine). Used to choose the built-in
model's default layer.

Four objects are cut from ``assets/``: the cat (``chelsea.png``), the espresso cup (``coffee.png``), the rocket
(``rocket.jpg``) and the helmet (``astronaut.png``). Every pair of them is pasted on a grey canvas

* side by side, each fitted into one half of a 2:1 canvas, in both orders (``side by side``, ``swapped``);
* at random sizes and positions, never overlapping (``random``, ``RANDOM_SCENES`` per pair, seeded).

For each object of each composite, the class explained is the model's best-scoring class of that object's
family on the composite (cats 281-285; espresso 967; missile or projectile; football or crash helmet). For each
candidate layer, ``gradcam_core.explain`` gives the heatmap; the trial is a *hit* when the heatmap's maximum
lies inside the object's pasted box, and its *energy share* is the part of the heatmap's total inside that box.
A map without positive evidence counts as a miss with no energy.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from gradcam_core import explain, load_model, to_input
from gradcam_core.models import LoadedModel

from .report import ROOT, environment, load_average, markdown_table, write_report

ASSETS = ROOT / "assets"
LAYERS = (
    "_blocks.10",
    "_blocks.11",
    "_blocks.12",
    "_blocks.13",
    "_blocks.14",
    "_blocks.15",
    "_conv_head",
    "_bn1",
    "_head_act",
)
GREY = (128, 128, 128)
CELL = 320  # side-by-side composites are 2 * CELL x CELL
RANDOM_CANVAS = (640, 448)
RANDOM_SCENES = 4  # per pair of objects
SCALE_RANGE = (0.35, 0.65)  # random composites: an object's longer side, as a fraction of the canvas height
SEED = 0

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


@dataclass(frozen=True)
class SceneObject:
    """An object cut from a sample image, and the classes that name it."""

    name: str
    file: str
    crop: Box | None
    classes: tuple[int, ...]

    def picture(self) -> Image.Image:
        """The object's pixels (the cropped sample image)."""
        with Image.open(ASSETS / self.file) as image:
            rgb = image.convert("RGB")
        return rgb.crop(self.crop) if self.crop else rgb


OBJECTS = (
    SceneObject("cat", "chelsea.png", None, (281, 282, 283, 284, 285)),  # tabby ... Egyptian cat
    SceneObject("espresso", "coffee.png", (72, 12, 484, 392), (967,)),  # the cup on its saucer
    SceneObject("rocket", "rocket.jpg", (265, 115, 375, 427), (657, 744)),  # missile, projectile
    SceneObject("helmet", "astronaut.png", (275, 340, 512, 512), (560, 518)),  # football, crash helmet
)


@dataclass(frozen=True)
class Placement:
    """An object pasted on a composite, and where."""

    obj: SceneObject
    box: Box


@dataclass(frozen=True)
class Scene:
    """A composite image of two objects."""

    layout: str
    image: Image.Image
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Trial:
    """The outcome of explaining one object of one composite at one layer."""

    layer: str
    layout: str
    obj: str
    hit: bool
    energy: float
    empty: bool
    box_share: float


# --- composites --------------------------------------------------------------------------------------------------


def fit(picture: Image.Image, longest: int) -> Image.Image:
    """``picture`` resized (aspect kept) so that its longer side is ``longest`` pixels."""
    scale = longest / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def side_by_side(layout: str, objects: Sequence[tuple[SceneObject, Image.Image]]) -> Scene:
    """Each object fitted and centred in its own ``CELL`` x ``CELL`` half of the canvas, left to right."""
    canvas = Image.new("RGB", (CELL * len(objects), CELL), GREY)
    placements = []
    for index, (obj, picture) in enumerate(objects):
        resized = fit(picture, CELL)
        left = index * CELL + (CELL - resized.width) // 2
        top = (CELL - resized.height) // 2
        canvas.paste(resized, (left, top))
        placements.append(Placement(obj, (left, top, left + resized.width, top + resized.height)))
    return Scene(layout, canvas, tuple(placements))


def random_scene(objects: Sequence[tuple[SceneObject, Image.Image]], rng: random.Random) -> Scene:
    """Objects at random sizes and non-overlapping random positions on a grey ``RANDOM_CANVAS``."""
    canvas = Image.new("RGB", RANDOM_CANVAS, GREY)
    resized = [fit(picture, round(rng.uniform(*SCALE_RANGE) * RANDOM_CANVAS[1])) for _, picture in objects]
    boxes = _disjoint_boxes([picture.size for picture in resized], rng)
    for picture, box in zip(resized, boxes):
        canvas.paste(picture, box[:2])
    return Scene("random", canvas, tuple(Placement(obj, box) for (obj, _), box in zip(objects, boxes)))


def _disjoint_boxes(sizes: list[tuple[int, int]], rng: random.Random, tries: int = 100_000) -> list[Box]:
    """Uniformly random positions of boxes of ``sizes`` inside the canvas, pairwise disjoint (by rejection).

    Two objects always fit side by side: their longer sides are at most ``SCALE_RANGE[1]`` x the canvas height.
    """
    for _ in range(tries):
        boxes = [_random_box(size, rng) for size in sizes]
        if not any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2)):
            return boxes
    raise RuntimeError(f"No room for objects of sizes {sizes} on {RANDOM_CANVAS}; reduce SCALE_RANGE.")


def _random_box(size: tuple[int, int], rng: random.Random) -> Box:
    width, height = size
    left = rng.randint(0, RANDOM_CANVAS[0] - width)
    top = rng.randint(0, RANDOM_CANVAS[1] - height)
    return left, top, left + width, top + height


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def scenes(rng: random.Random) -> Iterator[Scene]:
    """Every pair of ``OBJECTS``: side by side, swapped, and ``RANDOM_SCENES`` random composites."""
    pictures = [(obj, obj.picture()) for obj in OBJECTS]
    for first, second in itertools.combinations(pictures, 2):
        yield side_by_side("side by side", [first, second])
        yield side_by_side("swapped", [second, first])
        for _ in range(RANDOM_SCENES):
            yield random_scene([first, second], rng)


# --- scoring -----------------------------------------------------------------------------------------------------


def explained_class(loaded: LoadedModel, image: Image.Image, classes: tuple[int, ...]) -> int:
    """The best-scoring class of ``classes`` for ``image``."""
    with torch.no_grad():
        logits = loaded.model(to_input(image, loaded.preprocessing))[0]
    return max(classes, key=lambda index: float(logits[index]))


def score(heatmap: np.ndarray, box: Box) -> tuple[bool, float, bool]:
    """``(hit, energy share, empty)`` of a ``(H, W)`` heatmap for an object in ``box``."""
    total = float(heatmap.sum())
    if total <= 0.0:
        return False, 0.0, True
    left, top, right, bottom = box
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    hit = left <= column < right and top <= row < bottom
    return bool(hit), float(heatmap[top:bottom, left:right].sum()) / total, False


def play(loaded: LoadedModel, scene: Scene) -> Iterator[Trial]:
    """Explain every object of ``scene`` at every layer of ``LAYERS``."""
    area = scene.image.width * scene.image.height
    for placement in scene.placements:
        target = explained_class(loaded, scene.image, placement.obj.classes)
        left, top, right, bottom = placement.box
        box_share = (right - left) * (bottom - top) / area
        for layer in LAYERS:
            heatmap = explain(scene.image, model=loaded, layer=layer, target=target).heatmap
            hit, energy, empty = score(heatmap, placement.box)
            yield Trial(layer, scene.layout, placement.obj.name, hit, energy, empty, box_share)


# --- report ------------------------------------------------------------------------------------------------------


def wilson(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a hit rate."""
    if trials == 0:
        return 0.0, 1.0
    rate = hits / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def _rate(trials: list[Trial]) -> float:
    """Hit rate."""
    return sum(t.hit for t in trials) / len(trials)


def _energy(trials: list[Trial]) -> float:
    """Mean energy share."""
    return float(np.mean([t.energy for t in trials]))


def _by_layer(trials: list[Trial]) -> dict[str, list[Trial]]:
    return {layer: [t for t in trials if t.layer == layer] for layer in LAYERS}


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def best_layer(trials: list[Trial]) -> str:
    """The layer that points best, then concentrates the most energy on the object.

    Pointing comes first: the candidates are the layers whose hit rate lies inside the 95% interval of the
    best hit rate (not measurably worse at pointing). Of those, the one with the highest mean energy share wins.
    """
    by_layer = _by_layer(trials)
    top = by_layer[max(by_layer, key=lambda layer: _rate(by_layer[layer]))]
    low, _ = wilson(sum(t.hit for t in top), len(top))
    candidates = [layer for layer, mine in by_layer.items() if _rate(mine) >= low]
    return max(candidates, key=lambda layer: (_energy(by_layer[layer]), _rate(by_layer[layer])))


def layer_row(layer: str, trials: list[Trial], loaded: LoadedModel, winner: str) -> list[str]:
    """Summary row of one layer."""
    mine = _by_layer(trials)[layer]
    low, high = wilson(sum(t.hit for t in mine), len(mine))
    fixed = [t for t in mine if t.layout != "random"]
    placed = [t for t in mine if t.layout == "random"]
    shape = next(info.shape for info in loaded.layers if info.name == layer)
    marks = [" **(winner)**" if layer == winner else "", " (current default)" if layer == loaded.default_layer else ""]
    return [
        f"`{layer}`{''.join(marks)}",
        f"{shape[1]}×{shape[2]}",
        _pct(_rate(mine)),
        f"{_pct(low)}–{_pct(high)}",
        _pct(_rate(fixed)),
        _pct(_rate(placed)),
        _pct(_energy(mine)),
        str(sum(t.empty for t in mine)),
    ]


def chance_row(trials: list[Trial]) -> list[str]:
    """What a uniform map would score: its hit rate and energy share are both the box's share of the canvas."""
    one_layer = [t for t in trials if t.layer == LAYERS[0]]
    share = float(np.mean([t.box_share for t in one_layer]))
    fixed = float(np.mean([t.box_share for t in one_layer if t.layout != "random"]))
    placed = float(np.mean([t.box_share for t in one_layer if t.layout == "random"]))
    return ["uniform map (chance)", "—", _pct(share), "—", _pct(fixed), _pct(placed), _pct(share), "—"]


def object_row(layer: str, trials: list[Trial]) -> list[str]:
    """Hit rate and energy share of one layer, per object."""
    cells = [f"`{layer}`"]
    for obj in OBJECTS:
        mine = [t for t in trials if t.layer == layer and t.obj == obj.name]
        cells.append(f"{_pct(_rate(mine))} / {_pct(_energy(mine))}")
    return cells


def render(trials: list[Trial], scene_count: int, loaded: LoadedModel, load_at_start: tuple[float, ...]) -> str:
    """The markdown report."""
    winner = best_layer(trials)
    per_layer = len(trials) // len(LAYERS)
    summary = markdown_table(
        ["layer", "map", "hit rate", "95% CI", "hit: halves", "hit: random", "energy in box", "empty maps"],
        [*(layer_row(layer, trials, loaded, winner) for layer in LAYERS), chance_row(trials)],
        align="lrrrrrrr",
    )
    objects = markdown_table(
        ["layer", *(f"{obj.name} hit / energy" for obj in OBJECTS)],
        [object_row(layer, trials) for layer in LAYERS],
    )
    winner_trials = _by_layer(trials)[winner]
    names = ", ".join(obj.name for obj in OBJECTS)
    return "\n".join(
        [
            f"# Localisation: pointing game on {scene_count} composites ({per_layer} trials per layer)",
            "",
            f"Built-in EfficientNet-Lite0; every pair of {names} pasted side by side in both orders "
            f"(*halves*) and at random sizes and places on grey (*random*, {RANDOM_SCENES} per pair, seed "
            f"{SEED}). Hit = the heatmap's maximum inside the explained object's box; energy in box = the "
            "heatmap's sum inside the box / its total sum (both averaged over trials); empty = no positive "
            "evidence at all (a miss). 95% CI: Wilson interval of the hit rate. Map sizes for a 224 × 224 input.",
            "",
            summary,
            "",
            "Per object (hit rate / energy in box):",
            "",
            objects,
            "",
            f"**Winner: `{winner}`** — hit rate {_pct(_rate(winner_trials))}, energy in box "
            f"{_pct(_energy(winner_trials))}. Rule: among the layers whose hit rate lies within the 95% interval "
            f"of the best one, the highest energy in box. The model's current default is `{loaded.default_layer}`.",
            "",
            environment(load_at_start),
        ]
    )


def main() -> str:
    """Run the benchmark, write ``results/localisation.md`` and return its markdown."""
    load_at_start = load_average()
    loaded = load_model()
    trials: list[Trial] = []
    scene_count = 0
    for scene in scenes(random.Random(SEED)):
        trials.extend(play(loaded, scene))
        scene_count += 1
    return write_report("localisation", render(trials, scene_count, loaded, load_at_start))


if __name__ == "__main__":
    main()
