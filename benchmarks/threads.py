"""Thread settings for a server whose sessions compute at once: torch's default against one thread per session.

Run with ``python -m benchmarks.threads`` (about 5 minutes). A dashboard server runs every session's work in its
own Python thread of one process; each of those threads starts torch's intra-op (OpenMP) threads, by default as
many as there are cores, and OpenMP's workers spin while they wait for work. With several sessions computing at
once the machine is oversubscribed. Each setting runs in a fresh process (``OMP_WAIT_POLICY`` is read when the
OpenMP runtime starts) and does, for 1 and then ``SESSIONS`` concurrent sessions, ``ROUNDS`` rounds of what a
Trust-checks visit costs: one Grad-CAM explanation and one deletion/insertion check of the built-in model on a
sample photo. Reported: wall time of the whole load and each task's median and 95th-percentile latency.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

from .report import ROOT, environment, load_average, markdown_table, write_report

SESSIONS = 4
ROUNDS = 3
SAMPLES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
SETTINGS: dict[str, tuple[dict[str, str], int | None]] = {
    "torch default (one intra-op thread per core)": ({}, None),
    "default threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "one intra-op thread (torch.set_num_threads(1))": ({}, 1),
}


def worker(threads: int | None) -> dict[str, object]:
    """In this process: the load for 1 and ``SESSIONS`` sessions; wall times and task latencies in seconds."""
    import torch

    from gradcam_core import explain, load_model, trust

    if threads is not None:
        torch.set_num_threads(threads)
    model = load_model()
    explain(ROOT / "assets" / SAMPLES[0], model)  # warm-up

    def visit(sample: str, latencies: list[float]) -> None:
        for _ in range(ROUNDS):
            start = time.perf_counter()
            found = explain(ROOT / "assets" / sample, model)
            trust.deletion_insertion(model, found.image, found.raw_map, found.target.index)
            latencies.append(time.perf_counter() - start)

    report: dict[str, object] = {"torch_threads": torch.get_num_threads()}
    for sessions in (1, SESSIONS):
        latencies: list[float] = []
        threads_ = [threading.Thread(target=visit, args=(SAMPLES[n % len(SAMPLES)], latencies)) for n in range(sessions)]
        start = time.perf_counter()
        for thread in threads_:
            thread.start()
        for thread in threads_:
            thread.join()
        report[str(sessions)] = {"wall": time.perf_counter() - start, "latencies": sorted(latencies)}
    return report


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def main() -> str:
    """Run every setting in its own process, write ``results/threads.md`` and return it."""
    load_at_start = load_average()
    rows = []
    for name, (env, threads) in SETTINGS.items():
        completed = subprocess.run(
            [sys.executable, "-c", f"import json; from benchmarks.threads import worker; print(json.dumps(worker({threads})))"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True,
        )
        found = json.loads(completed.stdout.strip().splitlines()[-1])
        for sessions in ("1", str(SESSIONS)):
            run = found[sessions]
            latencies = run["latencies"]
            rows.append([
                name, str(found["torch_threads"]), sessions, f"{run['wall']:.1f}",
                f"{statistics.median(latencies):.2f}", f"{_p95(latencies):.2f}",
            ])
    table = markdown_table(
        ["setting", "torch threads", "sessions at once", "wall time (s)", "task p50 (s)", "task p95 (s)"], rows
    )
    report = f"# Thread settings under concurrent sessions\n\n{__doc__.strip()}\n\n{table}\n\n{environment(load_at_start)}\n"
    return write_report("threads", report)


if __name__ == "__main__":
    main()
