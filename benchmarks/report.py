"""Shared helpers of the benchmarks: markdown tables, the machine description and saving reports."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["RESULTS", "ROOT", "environment", "load_average", "markdown_table", "write_report"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table.

    Args:
        headers: Column titles.
        rows: One sequence of cells per row (formatted with ``str``).
        align: One letter per column, ``l`` or ``r`` (default: first column left, the others right).
    """
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align has {len(align)} letters for {len(headers)} columns")
    rule = ["---:" if letter == "r" else "---" for letter in align]
    lines = [_row(headers), _row(rule)]
    lines += [_row([str(cell) for cell in row]) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def load_average() -> tuple[float, float, float]:
    """The system's 1, 5 and 15-minute load averages (other processes competing for the CPUs)."""
    return os.getloadavg()


def environment(load_at_start: tuple[float, float, float] | None = None) -> str:
    """One line describing where the numbers come from: CPU, threads, torch version, system load.

    Args:
        load_at_start: :func:`load_average` when the benchmark started, reported next to the current one.
    """
    start = f"{_format_load(load_at_start)} at the start, " if load_at_start else ""
    return (
        f"Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}. Load average (1, 5, 15 min): "
        f"{start}{_format_load(load_average())} at the end; a load above the CPU count means other processes "
        "competed for the CPUs, which makes timings unreliable, ratios included (torch's threads stall)."
    )


def _format_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.1f}" for value in load)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(name: str, markdown: str) -> str:
    """Print ``markdown``, save it atomically as ``results/NAME.md`` and return it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{name}.md"
    temporary = target.with_suffix(".md.tmp")  # ignored by git (see .gitignore)
    temporary.write_text(markdown.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(temporary, target)
    print(markdown, flush=True)
    return markdown
