"""Memory over many explanations: resident set size (current and peak) over 200 consecutive ``explain()`` calls.

Run with ``python -m benchmarks.memory`` (under a minute). The built-in EfficientNet-Lite0 explains
``assets/chelsea.png`` (given as a path: decoding is part of every call) ``WARMUP`` times, then ``CALLS``
times more, sampling the memory every ``SAMPLE_EVERY`` calls. A leak shows as a steady climb of the RSS
that goes on after the allocator has settled (the second half of the calls) or of the number of live tensors;
a per-call spike shows as a climbing peak.

Afterwards every module of the model is checked for leftover hooks (forward, forward-pre, backward,
backward-pre), the process for global module hooks, and every parameter for a ``.grad`` (the engine must
differentiate with respect to the layer output only).
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradcam_core import explain, load_model
from gradcam_core.models import LoadedModel

from .report import ROOT, environment, load_average, markdown_table, write_report

CALLS = 200
WARMUP = 10
SAMPLE_EVERY = 25
IMAGE = ROOT / "assets" / "chelsea.png"
LEAK_MIB = 2.0  # RSS growth over the second half of the timed calls reported as a leak (10 KiB per call)
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass(frozen=True)
class Sample:
    """The process's memory after ``calls`` timed explanations."""

    calls: int
    rss_kib: int
    peak_kib: int
    tensors: int


@dataclass(frozen=True)
class Hygiene:
    """What the explanations left behind on the model and in the process."""

    module_hooks: int
    modules_with_hooks: tuple[str, ...]
    global_hooks: int
    parameters_with_grad: int


def rss_kib() -> int:
    """Current resident set size: psutil when installed, else ``VmRSS`` from ``/proc/self/status``."""
    try:
        import psutil
    except ImportError:
        return _proc_status_kib("VmRSS")
    return psutil.Process().memory_info().rss // 1024


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (``getrusage``'s ``ru_maxrss``, KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is missing from /proc/self/status")


def live_tensors() -> int:
    """Number of tensors reachable by the garbage collector (after a full collection)."""
    gc.collect()
    # issubclass(type(...)), not isinstance: isinstance reads __class__, which warns on some deprecated proxies
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def sample(calls: int) -> Sample:
    """Memory now, labelled with the number of timed calls so far."""
    tensors = live_tensors()
    return Sample(calls, rss_kib(), peak_rss_kib(), tensors)


def hygiene(model: nn.Module) -> Hygiene:
    """Count hooks left on ``model``'s modules and globally, and parameters holding a gradient."""
    counts = {name: sum(len(getattr(module, d, {})) for d in HOOK_DICTS) for name, module in model.named_modules()}
    global_hooks = sum(len(getattr(nn.modules.module, d, {})) for d in GLOBAL_HOOK_DICTS)
    return Hygiene(
        module_hooks=sum(counts.values()),
        modules_with_hooks=tuple(name or "(model)" for name, count in counts.items() if count),
        global_hooks=global_hooks,
        parameters_with_grad=sum(p.grad is not None for p in model.parameters()),
    )


def run(loaded: LoadedModel) -> tuple[list[Sample], float]:
    """Warm up, then explain ``CALLS`` times; memory samples (the first after the warm-up) and ms per call."""
    for _ in range(WARMUP):
        explain(IMAGE, model=loaded)
    samples = [sample(0)]
    elapsed = 0.0
    for call in range(1, CALLS + 1):
        start = time.perf_counter()
        explain(IMAGE, model=loaded)
        elapsed += time.perf_counter() - start
        if call % SAMPLE_EVERY == 0 or call == CALLS:
            samples.append(sample(call))
    return samples, 1000 * elapsed / CALLS


def second_half_growth_kib(samples: list[Sample]) -> int:
    """RSS growth from the sample nearest ``CALLS / 2`` to the last one."""
    middle = min(samples, key=lambda s: abs(s.calls - CALLS / 2))
    return samples[-1].rss_kib - middle.rss_kib


def _sample_row(s: Sample) -> list[object]:
    label = f"0 (after {WARMUP} warm-up calls)" if s.calls == 0 else f"+{s.calls}"
    return [label, f"{s.rss_kib / 1024:.1f}", f"{s.peak_kib / 1024:.1f}", s.tensors]


def render(
    samples: list[Sample],
    ms_per_call: float,
    before: Hygiene,
    after: Hygiene,
    load_at_start: tuple[float, float, float],
) -> str:
    """The markdown report."""
    first, last = samples[0], samples[-1]
    second_half = second_half_growth_kib(samples) / 1024
    leak = second_half > LEAK_MIB or last.tensors > first.tensors
    clean = after.module_hooks == 0 and after.global_hooks == 0 and after.parameters_with_grad == 0
    hooked = ", ".join(f"`{name}`" for name in after.modules_with_hooks) or "none"
    return "\n".join(
        [
            f"# Memory: {CALLS} consecutive `explain()` calls (built-in EfficientNet-Lite0, `chelsea.png`)",
            "",
            f"Default layer and class (top-1), image given as a path (decoded on every call); {ms_per_call:.0f} ms "
            "per call on average. RSS: psutil if installed, else `VmRSS` from `/proc/self/status`; peak: "
            "`getrusage` `ru_maxrss`; live tensors counted after a full garbage collection.",
            "",
            markdown_table(["timed calls", "RSS MiB", "peak RSS MiB", "live tensors"], map(_sample_row, samples)),
            "",
            markdown_table(
                ["check", "result"],
                [
                    ["RSS growth over the timed calls", f"{(last.rss_kib - first.rss_kib) / 1024:+.1f} MiB"],
                    ["peak RSS growth over the timed calls", f"{(last.peak_kib - first.peak_kib) / 1024:+.1f} MiB"],
                    [f"RSS growth over the last {CALLS // 2} calls", f"{second_half:+.1f} MiB"],
                    ["live tensors, after warm-up → after", f"{first.tensors} → {last.tensors}"],
                    ["module hooks on the model, before → after", f"{before.module_hooks} → {after.module_hooks}"],
                    ["modules with a hook afterwards", hooked],
                    ["global module hooks, before → after", f"{before.global_hooks} → {after.global_hooks}"],
                    ["parameters holding a `.grad` afterwards", str(after.parameters_with_grad)],
                ],
                align="lr",
            ),
            "",
            f"Verdict: {'possible leak' if leak else 'no leak'} (RSS growth above {LEAK_MIB:g} MiB over the last "
            f"{CALLS // 2} calls, or more live tensors, would count as one; the allocator moves RSS by a few MiB "
            "either way); "
            f"{'nothing left on the model' if clean else 'the model was left modified'}.",
            "",
            environment(load_at_start),
        ]
    )


def main() -> str:
    """Run the benchmark, write ``results/memory.md`` and return its markdown."""
    load = load_average()
    loaded = load_model()
    before = hygiene(loaded.model)
    samples, ms_per_call = run(loaded)
    return write_report("memory", render(samples, ms_per_call, before, hygiene(loaded.model), load))


if __name__ == "__main__":
    main()
