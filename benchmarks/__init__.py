"""Benchmarks: run all with ``python -m benchmarks`` (``make bench``), or one with ``python -m benchmarks.NAME``.

Each module has a ``main() -> str`` that prints and returns a markdown report and writes it to
``benchmarks/results/NAME.md``. Numbers are ratios measured in one process, never timed assertions in tests.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(name: str, markdown: str) -> str:
    """Save ``markdown`` as ``results/NAME.md``, print it and return it."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    return markdown
