"""`--smoke`: every benchmark's seconds-long run, so a figure in the README always comes from a
script that still works.

A benchmark declares its smoke sizes once, next to its options::

    parser = argparse.ArgumentParser(...)
    parser.add_argument("--sets", type=int, default=1000)
    args = smoke.parse(parser, sets=20)

`python benchmarks/<name>.py --smoke` then runs the whole script (every stage, every check it
makes) on the small sizes; the figures it prints mean nothing. `tests/benchmarks/test_smoke.py`
runs each script this way (and fails for a script without the option), and `.ci/run` runs the
tests.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

ENV = "PATIENT_ML_BENCH_SMOKE"


def parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, **small: Any
) -> argparse.Namespace:
    """Parse the benchmark's options; with `--smoke` (or PATIENT_ML_BENCH_SMOKE=1) the options in
    `small` take their smoke values. A name in `small` that is not an option is a bug here."""
    shown = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in small.items())
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a seconds-long run that checks the script still works ({shown or 'as is'}); "
        "its figures mean nothing",
    )
    args = parser.parse_args(argv)
    args.smoke = args.smoke or os.environ.get(ENV) == "1"
    if args.smoke:
        for name, value in small.items():
            if not hasattr(args, name):
                raise SystemExit(f"smoke size {name!r} is not an option of this benchmark")
            setattr(args, name, value)
        print(f"smoke run ({shown or 'default sizes'}): the figures below mean nothing", flush=True)
    return args
