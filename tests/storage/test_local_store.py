"""LocalArtifactStore: the shared contract plus atomicity, concurrency and file-system details;
`artifact_store_from_uri`, the default URI setting and the cheap import of the package."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from patient_ml import settings
from patient_ml.exceptions import PatientMLError
from patient_ml.storage import (
    ArtifactStoreError,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_from_uri,
)
from patient_ml.storage.local import TMP_SUFFIX
from tests.storage.store_contract import StoreContract


class TestLocalStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalArtifactStore:
        return LocalArtifactStore(tmp_path / "artifacts")


def test_root_is_created_lazily_and_uris_are_file_uris(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "lazy" / "root")
    assert not (tmp_path / "lazy").exists()
    assert list(store.list_keys()) == [] and not store.exists("a")
    store.put_bytes("a b/c.txt", b"x")
    assert (tmp_path / "lazy" / "root" / "a b" / "c.txt").read_bytes() == b"x"
    uri = store.uri("a b/c.txt")
    assert uri == (tmp_path / "lazy" / "root" / "a b" / "c.txt").as_uri()
    assert uri.startswith("file:///") and "a%20b" in uri
    assert artifact_store_from_uri(store.uri("")).root == store.root  # URIs round-trip
    assert str(tmp_path) in store.description


def test_concurrent_put_if_absent_leaves_one_intact_file(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    payloads = [bytes([n]) * 2_000_000 for n in range(8)]  # large enough to overlap
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def put(n: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent_bytes("images/ab/abc.png", payloads[n]))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.read_bytes("images/ab/abc.png") in payloads  # one writer's bytes, complete
    assert os.listdir(tmp_path / "images" / "ab") == ["abc.png"]  # no temp files left


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    old, new = b"o" * 3_000_000, b"n" * 3_000_000
    store.put_bytes("k", old)
    seen: set[bytes] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            data = store.read_bytes("k")
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for data in (new, old, new):
        store.put_bytes("k", data)
    done.set()
    reader.join()
    assert seen <= {b"oo3000000", b"nn3000000"}  # never a mix, never short


def test_temp_files_are_not_listed_but_ordinary_tmp_names_are(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("a/report.tmp", b"a key may end in .tmp")
    (tmp_path / "a" / f".x.abc123{TMP_SUFFIX}").write_bytes(b"left by a crashed writer")
    assert list(store.list_keys()) == ["a/report.tmp"]


def test_files_get_the_umask_mode_not_mkstemp_0600(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("a", b"x")
    store.put_if_absent_bytes("b", b"x")
    source = tmp_path / "src"
    source.write_bytes(b"x")
    store.put_file("c", source)
    store.get_file("a", tmp_path / "out" / "a")
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "out" / "a"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_delete_prefix_removes_emptied_folders_but_not_the_root(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes("d/1/2/x", b".")
    store.put_bytes("d/keep", b".")
    assert store.delete_prefix("d/1") == 1
    assert not (tmp_path / "root" / "d" / "1").exists()
    assert store.delete_prefix("") == 1
    assert (tmp_path / "root").is_dir() and os.listdir(tmp_path / "root") == []


def test_write_failure_is_an_artifact_store_error(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("a", b"a file where a folder is needed")
    with pytest.raises(ArtifactStoreError, match="Cannot write") as info:
        store.put_bytes("a/b", b"x")
    assert store.uri("a/b") in info.value.message
    assert "PATIENT_ML_ARTIFACT_URI" in (info.value.fix or "")


def test_a_folder_is_not_an_artifact(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("dir/file", b".")
    assert not store.exists("dir")
    with pytest.raises(PatientMLError, match="No artifact"):
        store.read_bytes("dir")


# --- artifact_store_from_uri and settings ---------------------------------------------------


def test_store_from_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_uri = artifact_store_from_uri(tmp_path.as_uri())
    assert isinstance(by_uri, LocalArtifactStore) and by_uri.root == tmp_path.resolve()
    localhost = artifact_store_from_uri(f"file://localhost{tmp_path}")
    assert isinstance(localhost, LocalArtifactStore) and localhost.root == tmp_path.resolve()
    spaced = artifact_store_from_uri((tmp_path / "a b").as_uri())
    assert isinstance(spaced, LocalArtifactStore) and spaced.root == tmp_path / "a b"
    absolute = artifact_store_from_uri(str(tmp_path / "x"))
    assert isinstance(absolute, LocalArtifactStore) and absolute.root == tmp_path / "x"
    monkeypatch.chdir(tmp_path)
    relative = artifact_store_from_uri("rel/arts")
    assert isinstance(relative, LocalArtifactStore)
    assert relative.root == tmp_path.resolve() / "rel" / "arts"  # resolved, not cwd-dependent
    bucket_only = artifact_store_from_uri("s3://bucket")
    assert isinstance(bucket_only, S3ArtifactStore) and bucket_only.uri("k") == "s3://bucket/k"
    remote = artifact_store_from_uri("s3://bucket/some/prefix/", aws_conn_id="c")
    assert isinstance(remote, S3ArtifactStore) and remote.aws_conn_id == "c"
    assert remote.uri("k/v") == "s3://bucket/some/prefix/k/v"


@pytest.mark.parametrize(
    "uri", ["", "   ", "ftp://x/y", "http://bucket/x", "file://host/x", "file:relative", "s3://"]
)
def test_store_from_uri_refuses_other_forms(uri: str) -> None:
    with pytest.raises(PatientMLError) as info:
        artifact_store_from_uri(uri)
    text = str(info.value)
    assert "s3://bucket" in text and ("file:///" in text or "S3 URL" in text)


def test_store_from_uri_refuses_bad_s3_prefix() -> None:
    with pytest.raises(ArtifactStoreError, match="not a relative path"):
        artifact_store_from_uri("s3://bucket/a/../b")


def test_default_artifact_uri_is_under_the_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATIENT_ML_ARTIFACT_URI", raising=False)
    default = settings.artifact_uri()
    assert default.startswith("file:///")
    assert default == (settings.home() / "artifacts").resolve().as_uri()
    store = artifact_store_from_uri(default)
    assert isinstance(store, LocalArtifactStore)
    assert store.root == (settings.home() / "artifacts").resolve()
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", "s3://b/p")
    assert settings.artifact_uri() == "s3://b/p"
    # documented: the [patient_ml] section (settings.yaml) the docs' table is drawn from
    assert "artifact store" in settings.catalog()["artifact_uri"]["description"]


def test_importing_the_store_stays_cheap() -> None:
    code = (
        "import sys, patient_ml.storage; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'boto3', 'botocore'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
