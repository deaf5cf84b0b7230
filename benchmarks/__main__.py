"""Run every benchmark in turn: ``python -m benchmarks``."""

from __future__ import annotations

import importlib

NAMES = ("speed", "memory", "localisation", "reblend", "load")

for name in NAMES:
    importlib.import_module(f"benchmarks.{name}").main()
