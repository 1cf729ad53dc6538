"""Every script in `benchmarks/` still works: each runs end to end with `--smoke` (small sizes,
every stage and check of the real run), so a figure the README quotes always comes from a script
that runs on today's code (issue: "benchmarks never rot").

A script that does not take `--smoke` fails `test_every_benchmark_has_a_smoke_run`, unless it is
listed in `COVERED_ELSEWHERE` with the test that runs the same code, or in `NOT_YET` with why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"

# script -> the test that runs its code path as a whole
COVERED_ELSEWHERE = {
    # the benchmark prints what tests/compose/test_compose_stack.py measures: both call
    # include.compose_stack.run_compose_demo (the image build, the stack, the demo, `down`)
    "compose_stack.py": "tests/compose/test_compose_stack.py",
    # the benchmark repeats the fault suite's scenario and times it: both call
    # include.faults.survive_faults (a real Airflow, a run through its faults, the records)
    "faults.py": "tests/e2e/test_faults.py",
}
# script -> why it has no smoke run yet (each needs a small-data mode of its own)
NOT_YET: dict[str, str] = {}
# seconds each smoke run may take on a loaded 2-core CI machine
TIMEOUT = 900


def scripts() -> list[str]:
    """The benchmark scripts: files of benchmarks/ that run as a program."""
    return sorted(
        p.name
        for p in BENCHMARKS.glob("*.py")
        if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)
    )


SMOKED = [s for s in scripts() if s not in COVERED_ELSEWHERE and s not in NOT_YET]


def test_every_benchmark_has_a_smoke_run() -> None:
    listed = set(COVERED_ELSEWHERE) | set(NOT_YET)
    assert listed <= set(scripts()), (
        f"listed scripts that no longer exist: {listed - set(scripts())}"
    )
    for name in SMOKED:
        source = (BENCHMARKS / name).read_text()
        assert "smoke.parse(" in source, (
            f"benchmarks/{name} has no --smoke run: parse its options with "
            "benchmarks.smoke.parse(parser, <option>=<small value>, ...)"
        )
    for name, test in COVERED_ELSEWHERE.items():
        assert (ROOT / test).exists(), f"{name}: {test} is gone"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A scratch folder with a short path: Chromium's singleton socket under TMPDIR must fit in
    a Unix socket path (107 bytes), which pytest-xdist's `tmp_path` (…/popen-gw1/<test>…) does
    not."""
    folder = Path(tempfile.mkdtemp(prefix="pml-smoke-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("script", SMOKED)
def test_benchmark_smoke_run(script: str, short_tmp: Path) -> None:
    env = {**os.environ, "TMPDIR": str(short_tmp)}
    for var in ("PATIENT_ML_HOME", "PATIENT_ML_DATABASE_URL", "PATIENT_ML_ARTIFACT_URI"):
        env.pop(var, None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
    assert done.returncode == 0, f"benchmarks/{script} --smoke exited {done.returncode}:\n{tail}"
    assert "smoke run (" in done.stdout, tail
    print(f"benchmarks/{script} --smoke: {elapsed:.0f} s")
