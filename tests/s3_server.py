"""A real S3-compatible HTTP endpoint for tests: moto in server mode on a free local port.

    def test_x(s3: S3Server) -> None:                      # or `s3_server` (session-wide)
        bucket = s3.new_bucket()
        store = S3ArtifactStore(bucket, aws_conn_id=s3.conn_id)   # talks HTTP to moto

`s3_server` (session) starts moto's ThreadedMotoServer on 127.0.0.1; nothing is patched in
process, every boto3 call goes over HTTP. `s3` (per test) points the Airflow connection
`aws_test` at it through AIRFLOW_CONN_AWS_TEST, clears AWS_* credentials from the environment
and yields the same server object.

Run `python tests/s3_server.py` to start one by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

CONN_ID = "aws_test"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint_url: str
    conn_id: str = CONN_ID

    @property
    def conn_env_var(self) -> str:
        return f"AIRFLOW_CONN_{self.conn_id.upper()}"

    def connection_json(self) -> str:
        """The Airflow AWS connection (as an AIRFLOW_CONN_* value) for this endpoint."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            }
        )

    def client(self) -> Any:
        """A plain boto3 client on the endpoint, for test setup and checks."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def new_bucket(self) -> str:
        """Create a bucket with a fresh random name (tests share one server)."""
        return self.create_bucket(f"pml-{uuid.uuid4().hex[:12]}")

    def put_many(self, bucket: str, keys: Iterable[str], body: bytes = b"") -> None:
        """Seed many small objects quickly (setup only; the code under test still uses HTTP).

        moto answers ~100 PUTs/s over HTTP here, so seeding goes straight into the server's
        in-memory backend (it runs in this process); should that moto API change, it falls
        back to PUTs over HTTP from 8 threads.
        """
        keys = list(keys)
        try:
            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.s3.models import s3_backends

            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            for key in keys:
                backend.put_object(bucket, key, body)
            return
        except (ImportError, AttributeError, KeyError, TypeError):
            pass
        client = self.client()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the test session; use `.endpoint_url` and `.new_bucket()`."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """`s3_server` with Airflow connection `aws_test` pointing at it for this test."""
    from patient_ml.storage.s3 import _Client

    monkeypatch.setenv(s3_server.conn_env_var, s3_server.connection_json())
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    # Building a client costs ~0.3 s; keep a cached one only if it targets this server.
    cached = _Client._clients.get(s3_server.conn_id)
    if cached is not None and cached.meta.endpoint_url != s3_server.endpoint_url:
        _Client.reset(s3_server.conn_id)
    yield s3_server


if __name__ == "__main__":
    from moto.server import ThreadedMotoServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = _free_port()
    manual = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    manual.start()
    info = S3Server(f"http://127.0.0.1:{port}")
    print(f"moto S3 at {info.endpoint_url}; {info.conn_env_var}='{info.connection_json()}'")
    print("Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        manual.stop()
