"""`make bench`: run every bench/bench_*.py module's main() and print its figures.

Benchmarks measure; they never assert. Each module prints its own table of figures, each a
ratio against a reference measured in the same run where the issue asks for one.
``python -m bench NAME`` runs only bench/bench_NAME.py.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv]
    failures = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as exc:  # a broken benchmark must not hide the others
            failures += 1
            print(f"{name} failed: {exc!r}", flush=True)
        print(f"({name}: {time.monotonic() - started:.1f} s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
