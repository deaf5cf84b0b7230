"""Trust checks on the built-in EfficientNet-Lite0: what they cost, and how each CAM method fares on them.

Run with ``python -m benchmarks.faithfulness``. Three parts, all at the default layer and for each image's
top-1 class:

* **Cost** on ``chelsea.png``: one ``explain`` (Grad-CAM) against ``deletion_insertion`` (20 steps, one random
  order: 78 images scored in batches of 4), ``sanity_check`` building its randomised copy and with the copy
  cached (``randomized=``), and ``region_check``. Contenders interleaved in one process, median of the rounds.
* **Faithfulness** of every method in ``METHODS`` on the five images of ``assets/``: mean deletion AUC (lower
  is better) and insertion AUC (higher is better) over the images, with the chance level: the same curves for
  random pixel orders (the smooth random map the module uses, averaged over ``CHANCE_ORDERS`` orders; and
  single random pixels, to show why that is no fair chance level), and on how many images the map beats it.
* **Sanity**: the mean rank correlation of each method's map with the same map after re-initialising the head
  and the target layer (``_fc``, ``_bn1``), and how many images get flagged (similarity above 0.5). Score-CAM
  is left out of this part: its map costs one forward pass per channel (1280 at ``_bn1``), twice per image.

Progress goes to stderr; the whole run takes about 7 minutes on an idle 2-core CPU, most of it Score-CAM.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import write_report
from gradcam_core import METHODS, explain, load_image, load_model
from gradcam_core.trust import deletion_insertion, randomized_copy, region_check, sanity_check

ASSETS = Path(__file__).resolve().parents[1] / "assets"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png", "retina.jpg", "rocket.jpg")
STEPS = 20
CHANCE_ORDERS = 8
ROUNDS = 5
SEED = 0
SANITY_SKIPPED = ("scorecam",)


def _progress(message: str) -> None:
    print(f"[faithfulness {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _time(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each contender, interleaved round by round after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds + 1):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            if round_index:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def cost_table(model, image: Image.Image) -> str:
    """Median milliseconds of each trust check against one Grad-CAM."""
    explanation = explain(image, model)
    cached = randomized_copy(model, seed=SEED)
    mask = np.zeros(explanation.heatmap.shape, dtype=bool)
    mask[:, : mask.shape[1] // 2] = True
    contenders = {
        "one Grad-CAM (`explain`)": lambda: explain(image, model),
        f"`deletion_insertion` ({STEPS} steps, 1 random order)": lambda: deletion_insertion(
            model, image, explanation.heatmap, steps=STEPS
        ),
        "`sanity_check` (builds the randomised copy)": lambda: sanity_check(model, image),
        "`sanity_check` (cached copy)": lambda: sanity_check(model, image, randomized=cached),
        "`randomized_copy` alone": lambda: randomized_copy(model, seed=SEED),
        "`region_check` (image size)": lambda: region_check(explanation.heatmap, mask),
    }
    times = _time(contenders, ROUNDS)
    base = statistics.median(times["one Grad-CAM (`explain`)"])
    rows = ["| check | median ms | × one Grad-CAM |", "|---|---:|---:|"]
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(f"| {name} | {median:.1f} | {median / base:.2f}× |")
    return "\n".join(rows)


def faithfulness_tables(model, images: dict[str, Image.Image]) -> tuple[str, str, str]:
    """Per-method means, the per-image Grad-CAM detail, and the sanity-check summary."""
    chance, pixel_chance = {}, {}
    _progress("chance levels")
    for name, image in images.items():
        blank = np.ones((8, 8), dtype=np.float32)  # only the random curves of these calls are used
        chance[name] = deletion_insertion(model, image, blank, steps=STEPS, seed=SEED, random_orders=CHANCE_ORDERS)
        pixel_chance[name] = deletion_insertion(model, image, blank, steps=STEPS, seed=SEED, random_cell=1)
    randomized = randomized_copy(model, seed=SEED)
    method_rows, detail_rows, sanity_rows = [], [], []
    for method in METHODS:
        _progress(f"method {method}")
        deletions, insertions, del_wins, ins_wins, similarities = [], [], 0, 0, []
        for name, image in images.items():
            explanation = explain(image, model, method=method)
            curves = deletion_insertion(model, image, explanation.heatmap, steps=STEPS, seed=SEED)
            reference = chance[name]
            deletions.append(curves.deletion_auc)
            insertions.append(curves.insertion_auc)
            del_wins += curves.deletion_auc < reference.random_deletion_auc
            ins_wins += curves.insertion_auc > reference.random_insertion_auc
            if method not in SANITY_SKIPPED:
                similarities.append(sanity_check(model, image, method=method, randomized=randomized).similarity)
            if method == "gradcam":
                detail_rows.append(
                    f"| {name} | {explanation.target.label} ({explanation.target.probability:.2f}) "
                    f"| {curves.deletion_auc:.3f} | {reference.random_deletion_auc:.3f} "
                    f"| {pixel_chance[name].random_deletion_auc:.3f} | {curves.insertion_auc:.3f} "
                    f"| {reference.random_insertion_auc:.3f} | {pixel_chance[name].random_insertion_auc:.3f} |"
                )
        count = len(images)
        method_rows.append(
            f"| {METHODS[method].title} | {np.mean(deletions):.3f} | {del_wins}/{count} "
            f"| {np.mean(insertions):.3f} | {ins_wins}/{count} |"
        )
        if not similarities:
            continue
        flagged = sum(s > 0.5 for s in similarities)
        sanity_rows.append(
            f"| {METHODS[method].title} | {np.mean(similarities):+.2f} | {min(similarities):+.2f} "
            f"| {max(similarities):+.2f} | {flagged}/{count} |"
        )
    mean = lambda values: float(np.mean(list(values)))  # noqa: E731
    method_rows.append(
        f"| *chance: random map, 32-px cells ({CHANCE_ORDERS} orders)* "
        f"| {mean(c.random_deletion_auc for c in chance.values()):.3f} | "
        f"| {mean(c.random_insertion_auc for c in chance.values()):.3f} | |"
    )
    method_rows.append(
        f"| *random single pixels (1 order)* | {mean(c.random_deletion_auc for c in pixel_chance.values()):.3f} | "
        f"| {mean(c.random_insertion_auc for c in pixel_chance.values()):.3f} | |"
    )
    methods_table = "\n".join(
        [
            "| method | deletion AUC ↓ | beats chance | insertion AUC ↑ | beats chance |",
            "|---|---:|---:|---:|---:|",
            *method_rows,
        ]
    )
    detail_table = "\n".join(
        [
            "| image | top class (p) | deletion | chance (32-px) | chance (pixels) | insertion | chance (32-px) "
            "| chance (pixels) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *detail_rows,
        ]
    )
    sanity_table = "\n".join(
        ["| method | mean similarity | min | max | flagged (> 0.5) |", "|---|---:|---:|---:|---:|", *sanity_rows]
    )
    return methods_table, detail_table, sanity_table


def main() -> str:
    """Run the benchmark, write ``results/faithfulness.md`` and return its markdown."""
    load_start = os.getloadavg()
    model = load_model()
    images = {name: load_image(ASSETS / name) for name in IMAGES}
    started = time.perf_counter()
    _progress("cost")
    costs = cost_table(model, images["chelsea.png"])
    methods_table, detail_table, sanity_table = faithfulness_tables(model, images)
    minutes = (time.perf_counter() - started) / 60
    load_end = os.getloadavg()
    markdown = f"""# Trust checks: cost and faithfulness (EfficientNet-Lite0, layer `{model.default_layer}`)

CPU, torch {torch.__version__} with {torch.get_num_threads()} threads; load average {load_start[0]:.1f} at the
start and {load_end[0]:.1f} at the end on {os.cpu_count()} CPUs (other processes competing inflate absolute
times; the ratios are measured interleaved). {minutes:.0f} min in all.

## Cost on chelsea.png (median of {ROUNDS} interleaved rounds)

{costs}

## Faithfulness: deletion and insertion AUC, mean over the 5 images of assets/ (top-1 class, {STEPS} steps)

Baseline: the input blurred with σ = 1/20 of its shorter side. *Beats chance*: on how many images the map's
AUC is better than the chance level of that image (random maps of 32-pixel cells, {CHANCE_ORDERS} orders averaged).

{methods_table}

Grad-CAM image by image:

{detail_table}

## Sanity check: similarity after re-initialising `_fc` and `_bn1` (Spearman, maps upsampled to the input)

Score-CAM left out (2 × 1280 forward passes per image).

{sanity_table}
"""
    return write_report("faithfulness", markdown)


if __name__ == "__main__":
    main()
