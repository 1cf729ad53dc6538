"""The compose stack's teardown runs when the process is stopped with SIGTERM (CI's timeout,
`kill`), not only on an exception or Ctrl-C: Python's default SIGTERM would end the process
without running `finally`, leaving containers, networks and databases behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from include.compose_stack import _terminate_as_exit
marker = Path({marker!r})
with _terminate_as_exit():
    try:
        print("up", flush=True)
        time.sleep(60)
    finally:
        marker.write_text("torn down")
"""


def test_sigterm_while_the_stack_is_up_still_runs_the_teardown(tmp_path: Path) -> None:
    marker = tmp_path / "teardown"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT), marker=str(marker))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "up"
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 30
    assert marker.read_text() == "torn down"


def test_the_previous_sigterm_handler_is_restored() -> None:
    from include.compose_stack import _terminate_as_exit

    before = signal.getsignal(signal.SIGTERM)
    with _terminate_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
