"""Run benchmarks, each in its own process: ``python -m benchmarks [NAME ...]`` (default: all of them)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from . import NAMES
from .report import ROOT


def run(name: str) -> int:
    """Run ``python -m benchmarks.NAME`` in a fresh interpreter (its report goes to stdout); its exit code."""
    print(f"\n<!-- python -m benchmarks.{name} -->\n", flush=True)
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named in ``argv`` (all by default); non-zero if any of them failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(NAMES)} (default: all)")
    names = parser.parse_args(argv).names or list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from: {', '.join(NAMES)}")
    failed = [name for name in names if run(name) != 0]
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
