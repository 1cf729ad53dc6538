"""A real FHIR R4 server for tests: sekmet-fhir (FastAPI + SQLite) in a subprocess.

    with running_fhir_server(tmp_dir) as server:      # or the `fhir_server` fixture
        client = FhirClient(server.base_url)           # http://127.0.0.1:<port>/fhir

The parent binds a free 127.0.0.1 port and hands the listening socket to the child (no race for
the port), writes a sekmet settings file (SQLite DB in the temp folder, simulator off, traffic
log off) and waits until `GET /fhir/metadata` answers. The server offers search with paging,
transactions, versioned updates with If-Match, Binary (stored as a JSON resource) and bulk
`$export` (system, Patient and Group level). `server_auth` turns on basic/bearer/SMART auth,
e.g. `{"types": ["basic"], "users": {"alice": "secret"}}`.

Run `python tests/fhir_server.py` to start one by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

STARTUP_TIMEOUT = 30.0
BASE_PATH = "/fhir"
# Bytecode cache for the child: sekmet imports ~200 modules; without cached bytecode (e.g. when
# PYTHONDONTWRITEBYTECODE is set) its start takes ~3 s instead of ~1 s.
PYCACHE = Path(tempfile.gettempdir()) / "patient-ml-test-pycache"
# The child runs sekmet's app on the listening socket it inherits (file descriptor in argv[1]).
_CHILD = """
import socket, sys, uvicorn
from sekmet.main import create_app
sock = socket.socket(fileno=int(sys.argv[1]))
config = uvicorn.Config(create_app(), log_level="warning", lifespan="off")
uvicorn.Server(config).run(sockets=[sock])
"""


@dataclass
class FhirServer:
    base_url: str
    root_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def token_url(self) -> str:
        """sekmet's OAuth2 token endpoint (client credentials for `smart_clients`)."""
        return f"{self.root_url}/auth/token"

    def log_text(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _settings(port: int, data_dir: Path, server_auth: dict[str, Any] | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}{BASE_PATH}",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "log_inbound": False,
        # bulk export jobs sleep min(1 s, delay) before completing; keep them quick
        "simulator": {"enabled": False, "delay_seconds": 0.3},
        "own_private_key_path": str(data_dir / "sekmet_private.pem"),
    }
    if server_auth:
        settings["server_auth"] = server_auth
    return settings


def _wait_until_up(server: FhirServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"sekmet FHIR server exited with code {server.process.returncode}:\n"
                + server.log_text()[-3000:]
            )
        try:
            if requests.get(f"{server.base_url}/metadata", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"sekmet FHIR server did not answer {server.base_url}/metadata within {timeout:g} s:\n"
        + server.log_text()[-3000:]
    )


@contextmanager
def running_fhir_server(
    data_dir: Path, *, server_auth: dict[str, Any] | None = None
) -> Iterator[FhirServer]:
    """Start sekmet on a free 127.0.0.1 port, yield it when it answers, stop it after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = data_dir / "settings.json"  # JSON is YAML, which sekmet reads
    config.write_text(json.dumps(_settings(port, data_dir, server_auth)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(SEKMET_CONFIG=str(config), PYTHONPYCACHEPREFIX=str(PYCACHE))
    with (data_dir / "server.log").open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            cwd=data_dir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    sock.close()
    root = f"http://127.0.0.1:{port}"
    server = FhirServer(root + BASE_PATH, root, data_dir, process)
    try:
        _wait_until_up(server, STARTUP_TIMEOUT)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """One sekmet FHIR server (no auth) for the test session; use `.base_url`."""
    with running_fhir_server(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the child on `kill` too
    with running_fhir_server(Path(tempfile.mkdtemp(prefix="sekmet-"))) as running:
        print(f"sekmet FHIR server at {running.base_url} (Ctrl-C stops it)", flush=True)
        with suppress(KeyboardInterrupt):
            running.process.wait()
