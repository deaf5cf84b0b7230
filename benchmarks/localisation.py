"""Pointing game on composites: does each class's map peak on its own object? Used to choose default layers.

Run with ``python -m benchmarks.localisation``. Each composite pastes the cat (chelsea) and the coffee cup
(coffee) at random sizes and positions on a grey canvas (seeded), never overlapping. For each object the
explained class is the model's best-scoring class of that object's family (cats 281-285; espresso, cup,
coffee mug); a *hit* is the heatmap's maximum inside that object's box, and the *energy share* is the part of
the heatmap's total inside the box.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import write_report
from gradcam_core import explain, load_model, to_input
from gradcam_core.models import LoadedModel

ASSETS = Path(__file__).resolve().parents[1] / "assets"
COMPOSITES = 100
CANVAS = (640, 480)
FAMILIES = {"chelsea.png": (281, 282, 283, 284, 285), "coffee.png": (967, 968, 504)}
LAYERS = ("_blocks.10", "_blocks.12", "_blocks.14", "_blocks.15", "_conv_head", "_bn1", "_head_act")


@dataclass(frozen=True)
class Placed:
    """An object pasted on a composite: its box (left, top, right, bottom) and candidate classes."""

    box: tuple[int, int, int, int]
    classes: tuple[int, ...]


def composite(rng: random.Random, objects: dict[str, Image.Image]) -> tuple[Image.Image, list[Placed]]:
    """Both objects on a grey canvas, in random order, sizes and vertical positions, side by side."""
    canvas = Image.new("RGB", CANVAS, (128, 128, 128))
    names = list(objects)
    rng.shuffle(names)
    placed, x = [], 0
    half = CANVAS[0] // 2
    for name in names:
        picture = objects[name]
        height = rng.randint(170, 300)
        width = min(half, round(picture.width * height / picture.height))
        height = round(width * picture.height / picture.width)
        left = x + rng.randint(0, half - width)
        top = rng.randint(0, CANVAS[1] - height)
        canvas.paste(picture.resize((width, height)), (left, top))
        placed.append(Placed((left, top, left + width, top + height), FAMILIES[name]))
        x += half
    return canvas, placed


def best_class(model: LoadedModel, image: Image.Image, classes: tuple[int, ...]) -> int:
    """The highest-scoring class of ``classes`` for ``image``."""
    import torch

    with torch.no_grad():
        logits = model.model(to_input(image, model.preprocessing))[0]
    return max(classes, key=lambda c: float(logits[c]))


def main() -> str:
    """Run the benchmark, write ``results/localisation.md`` and return its markdown."""
    model = load_model()
    objects = {name: Image.open(ASSETS / name).convert("RGB") for name in FAMILIES}
    rng = random.Random(0)
    hits = {layer: 0 for layer in LAYERS}
    shares: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    trials = 0
    box_shares: list[float] = []
    for _ in range(COMPOSITES):
        image, placed = composite(rng, objects)
        for item in placed:
            target = best_class(model, image, item.classes)
            left, top, right, bottom = item.box
            trials += 1
            box_shares.append((right - left) * (bottom - top) / (CANVAS[0] * CANVAS[1]))
            for layer in LAYERS:
                heat = explain(image, model=model, layer=layer, target=target).heatmap
                y, x = np.unravel_index(int(heat.argmax()), heat.shape)
                hits[layer] += int(left <= x < right and top <= y < bottom)
                total = float(heat.sum())
                shares[layer].append(float(heat[top:bottom, left:right].sum()) / total if total > 0 else 0.0)
    best = max(LAYERS, key=lambda layer: (hits[layer], np.mean(shares[layer])))
    lines = [
        f"# Localisation: pointing game on {COMPOSITES} composites of a cat and a coffee cup ({trials} trials)",
        "",
        "EfficientNet-Lite0 (built-in). Hit = the map's maximum inside the explained object's box; energy share = "
        f"the part of the map's total inside the box (a box covers {np.mean(box_shares):.0%} of the canvas on "
        "average: a map spread evenly would score that).",
        "",
        "| layer | hit rate | mean energy share |",
        "|---|---:|---:|",
        *(
            f"| `{layer}`{' (default)' if layer == model.default_layer else ''} | {hits[layer] / trials:.0%} "
            f"| {np.mean(shares[layer]):.0%} |"
            for layer in LAYERS
        ),
        "",
        f"Best layer here: `{best}`.",
    ]
    return write_report("localisation", "\n".join(lines))


if __name__ == "__main__":
    main()
