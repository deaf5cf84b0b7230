"""Each method's default layer, before and after: the pointing game of ``localisation`` per method and layer.

Run with ``python -m benchmarks.method_defaults``. Methods whose weights are never negative (Grad-CAM++,
LayerCAM, Score-CAM) used to explain the built-in model's ``_bn1`` (a batch-norm output, mostly negative) like
every method; they now explain ``_head_act``, the ReLU6 after it (``LoadedModel.default_layer_for``). Same
composites, classes and scoring as ``benchmarks/localisation.py``; Grad-CAM, whose default did not change, is
the reference. Score-CAM runs the model once per channel (1280 here), so it plays only the first
``SCORECAM_SCENES`` composites.
"""

from __future__ import annotations

import random
import time

from gradcam_core import explain, load_model

from .localisation import SEED, explained_class, scenes, score, wilson
from .report import environment, load_average, markdown_table, write_report

METHODS = ("gradcam", "gradcam++", "layercam", "scorecam")
LAYERS = ("_bn1", "_head_act")
SCORECAM_SCENES = 4


def main() -> str:
    """Run the pointing game per method and layer; write ``results/method_defaults.md`` and return it."""
    load_at_start = load_average()
    loaded = load_model()
    results: dict[tuple[str, str], list[tuple[bool, float, bool]]] = {}
    seconds: dict[tuple[str, str], float] = {}
    for number, scene in enumerate(scenes(random.Random(SEED))):
        for placement in scene.placements:
            target = explained_class(loaded, scene.image, placement.obj.classes)
            for method in METHODS:
                if method == "scorecam" and number >= SCORECAM_SCENES:
                    continue
                for layer in LAYERS:
                    start = time.perf_counter()
                    heatmap = explain(scene.image, model=loaded, layer=layer, target=target, method=method).heatmap
                    seconds[method, layer] = seconds.get((method, layer), 0.0) + time.perf_counter() - start
                    results.setdefault((method, layer), []).append(score(heatmap, placement.box))
    rows = []
    for method in METHODS:
        default = loaded.default_layer_for(method)
        for layer in LAYERS:
            trials = results[method, layer]
            hits = sum(hit for hit, _, _ in trials)
            low, high = wilson(hits, len(trials))
            rows.append([
                method,
                f"`{layer}`" + (" **(default)**" if layer == default else ""),
                str(len(trials)),
                f"{100 * hits / len(trials):.0f}% ({100 * low:.0f}–{100 * high:.0f})",
                f"{100 * sum(energy for _, energy, _ in trials) / len(trials):.0f}%",
                f"{100 * sum(empty for _, _, empty in trials) / len(trials):.0f}%",
                f"{seconds[method, layer] / len(trials):.2f}",
            ])
    table = markdown_table(
        ["method", "layer", "trials", "hit rate (95% CI)", "energy on the object", "empty maps", "s per map"], rows
    )
    report = (
        "# Each method's default layer (EfficientNet-Lite0, pointing game)\n\n"
        f"{__doc__.strip()}\n\n{table}\n\n{environment(load_at_start)}\n"
    )
    return write_report("method_defaults", report)


if __name__ == "__main__":
    main()
