"""Host processes labelled as the Docker backend labels its containers.

The local backend's trainers and the local model servers run in a session of their own (so a
stop reaches every child, and a server can outlive its task). When the task's process dies
(a worker killed, an out-of-memory kill), they keep running. To find them again, their
labels go into their environment as `PML_LABEL_<KEY>=value` (`label_environment`), and
`labelled_groups` finds the session leaders of this user whose environment holds all the
wanted labels (Linux: `/proc/<pid>/environ`; elsewhere nothing is found). Matching on the
environment, not on a process id kept somewhere, never hits an unrelated process that reused
an id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LABEL_PREFIX = "PML_LABEL_"
PROC = Path("/proc")


def label_environment(labels: Mapping[str, str]) -> dict[str, str]:
    """`{"run": "abc"}` → `{"PML_LABEL_RUN": "abc"}`."""
    return {f"{LABEL_PREFIX}{key.upper()}": str(value) for key, value in labels.items()}


def labelled_groups(labels: Mapping[str, str], proc: Path = PROC) -> list[int]:
    """Process ids of the session leaders (this user's, not this process) whose environment
    holds every one of `labels`; [] for no labels or where `/proc` is missing."""
    if not labels or not proc.is_dir():
        return []
    wanted = {k.encode(): v.encode() for k, v in label_environment(labels).items()}
    uid, me = os.getuid(), os.getpid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            if entry.stat().st_uid != uid or os.getsid(pid) != pid:
                continue
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        pairs = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        if all(pairs.get(key) == value for key, value in wanted.items()):
            found.append(pid)
    return sorted(found)


def stop_groups(leaders: Sequence[int], grace_seconds: float) -> int:
    """SIGTERM to each process group, SIGKILL to those still there after `grace_seconds`;
    returns how many groups were signalled."""
    signalled = []
    for pid in leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
            signalled.append(pid)
    deadline = time.monotonic() + grace_seconds
    alive = list(signalled)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _group_alive(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return len(signalled)


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)  # reap it when it is our own child
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
