"""Memory over many explanations: resident set size after a warm-up and after 200 more ``explain()`` calls.

Run with ``python -m benchmarks.memory``. Also checks that no hook is left on any module afterwards.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import write_report
from gradcam_core import explain, load_model

CALLS = 200
WARMUP = 10
IMAGE = Path(__file__).resolve().parents[1] / "assets" / "chelsea.png"


def rss_mib() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main() -> str:
    """Run the benchmark, write ``results/memory.md`` and return its markdown."""
    model = load_model()
    data = IMAGE.read_bytes()
    for _ in range(WARMUP):
        explain(data, model=model)
    after_warmup = rss_mib()
    samples = []
    for call in range(CALLS):
        explain(data, model=model, target=281 + call % 5, method=("gradcam", "counterfactual")[call % 2])
        if call % 50 == 49:
            samples.append(rss_mib())
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.model.modules())
    grads = sum(p.grad is not None for p in model.model.parameters())
    lines = [
        f"# Memory: {CALLS} consecutive explain() calls (EfficientNet-Lite0, chelsea.png, 5 classes, 2 methods)",
        "",
        "| after | RSS MiB |",
        "|---|---:|",
        f"| {WARMUP} warm-up calls | {after_warmup:.0f} |",
        *(f"| +{50 * (n + 1)} calls | {value:.0f} |" for n, value in enumerate(samples)),
        "",
        f"Growth over the last 150 calls: {samples[-1] - samples[0]:+.1f} MiB. Hooks left on the model: {hooks}. "
        f"Parameters with a `.grad`: {grads}.",
    ]
    return write_report("memory", "\n".join(lines))


if __name__ == "__main__":
    main()
