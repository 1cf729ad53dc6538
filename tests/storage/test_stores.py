"""Both artifact stores through the same checks: a local folder and S3 over real HTTP (moto
server), plus what is specific to each."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from patient_ml.storage import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLargeError,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_from_uri,
    read_s3_url,
)
from tests.s3_server import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    s3: S3Server = request.getfixturevalue("s3")
    return S3ArtifactStore(s3.new_bucket(), "root/prefix", aws_conn_id=s3.conn_id)


def test_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    assert not store.exists("a/b.txt")
    store.put_bytes("a/b.txt", b"one")
    store.put_bytes("a/b.txt", b"two")  # overwrite
    assert store.exists("a/b.txt") and store.read_bytes("a/b.txt") == b"two"
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 3_000_000)
    store.put_file("a/c/big.bin", source)
    with store.open_read("a/c/big.bin") as fh:
        assert fh.read(3) == b"xxx"
    copy = store.get_file("a/c/big.bin", tmp_path / "out" / "copy.bin")
    assert copy.read_bytes() == source.read_bytes()
    assert store.put_if_absent_bytes("z/sha.png", b"img") is True
    assert store.put_if_absent_bytes("z/sha.png", b"other") is False
    assert store.read_bytes("z/sha.png") == b"img"
    assert list(store.list_keys()) == ["a/b.txt", "a/c/big.bin", "z/sha.png"]
    assert list(store.list_keys("a/c")) == ["a/c/big.bin"]
    assert list(store.list_keys("nothing-here/")) == []
    assert store.uri("a/b.txt").endswith("/a/b.txt")
    assert store.delete_prefix("a") == 2
    assert list(store.list_keys()) == ["z/sha.png"]


def test_missing_key_names_the_uri(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match=r"no/such\.key"):
        store.read_bytes("no/such.key")
    with pytest.raises(ArtifactNotFoundError):
        store.get_file("no/such.key", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a\\b", "./a", "a/"])
def test_keys_must_be_relative_paths(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ArtifactStoreError, match="not a relative path"):
        store.put_bytes(key, b"x")


def test_concurrent_put_if_absent_leaves_one_intact_file(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    results: list[bool] = []
    payloads = [bytes([n]) * 200_000 for n in range(8)]

    def put(n: int) -> None:
        results.append(store.put_if_absent_bytes("images/ab/abc.png", payloads[n]))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert store.read_bytes("images/ab/abc.png") in payloads
    assert list(store.list_keys()) == ["images/ab/abc.png"]  # no temp files left


def test_s3_paging_and_missing_bucket(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for n in range(1050):
        client.put_object(Bucket=bucket, Key=f"p/k{n:05d}", Body=b"")
    store = S3ArtifactStore(bucket, "p", aws_conn_id=s3.conn_id)
    keys = list(store.list_keys())
    assert len(keys) == 1050 and keys[0] == "k00000" and keys == sorted(keys)
    missing = S3ArtifactStore("no-such-bucket-pml", aws_conn_id=s3.conn_id)
    with pytest.raises(ArtifactStoreError, match="does not exist") as info:
        missing.put_bytes("x", b"y")
    assert "create the bucket" in (info.value.fix or "")


def test_s3_unreachable_endpoint_names_the_connection(
    monkeypatch: pytest.MonkeyPatch, s3: S3Server
) -> None:
    from patient_ml.storage.s3 import _Client

    dead = S3Server("http://127.0.0.1:9", conn_id="aws_dead")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEAD", dead.connection_json())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    _Client.reset()
    with pytest.raises(ArtifactStoreError, match="aws_dead"):
        S3ArtifactStore("b", aws_conn_id="aws_dead").read_bytes("k")


def test_read_s3_url_with_size_limit(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="img/a.png", Body=b"p" * 5000)
    url = f"s3://{bucket}/img/a.png"
    assert read_s3_url(url, aws_conn_id=s3.conn_id) == b"p" * 5000
    assert len(read_s3_url(url, aws_conn_id=s3.conn_id, max_bytes=5000)) == 5000
    with pytest.raises(ArtifactTooLargeError):
        read_s3_url(url, aws_conn_id=s3.conn_id, max_bytes=4999)
    with pytest.raises(ArtifactNotFoundError):
        read_s3_url(f"s3://{bucket}/img/none.png", aws_conn_id=s3.conn_id)
    with pytest.raises(ArtifactStoreError, match="not an S3 URL"):
        read_s3_url("http://x/y", aws_conn_id=s3.conn_id)


def test_store_from_uri(tmp_path: Path) -> None:
    local = artifact_store_from_uri(tmp_path.as_uri())
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path.resolve()
    plain = artifact_store_from_uri(str(tmp_path / "x"))
    assert isinstance(plain, LocalArtifactStore)
    remote = artifact_store_from_uri("s3://bucket/some/prefix", aws_conn_id="c")
    assert isinstance(remote, S3ArtifactStore)
    assert remote.uri("k") == "s3://bucket/some/prefix/k" and remote.aws_conn_id == "c"
    for bad in ("ftp://x/y", "file://host/x", ""):
        with pytest.raises(ArtifactStoreError, match="file:///"):
            artifact_store_from_uri(bad)


def test_default_artifact_uri_is_under_the_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from patient_ml import settings

    monkeypatch.delenv("PATIENT_ML_ARTIFACT_URI", raising=False)
    assert settings.artifact_uri() == (settings.home() / "artifacts").resolve().as_uri()
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", "s3://b/p")
    assert settings.artifact_uri() == "s3://b/p"


def test_importing_the_store_stays_cheap() -> None:
    code = (
        "import sys, patient_ml.storage; "
        "print(any(m.split('.')[0] in {'airflow', 'boto3', 'botocore'} for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
