"""Benchmarks: run all with ``python -m benchmarks`` (``make bench``), or one with ``python -m benchmarks.NAME``.

Each benchmark module has a ``main() -> str`` that prints and returns a markdown report and saves it as
``benchmarks/results/NAME.md``. ``python -m benchmarks`` runs each in a fresh process, so that one benchmark's
models, threads and peak memory never colour another's numbers. Timings are ratios measured in one process,
never timed assertions in tests.
"""

from __future__ import annotations

from .report import RESULTS, write_report

__all__ = ["NAMES", "RESULTS", "write_report"]

#: Every benchmark, in the order ``python -m benchmarks`` runs them.
NAMES: tuple[str, ...] = (
    "speed", "methods", "scorecam_batch", "memory", "localisation", "method_defaults", "faithfulness", "threads",
    "reblend", "load", "page_speed", "audit", "slice_render", "sources", "volume",
)
