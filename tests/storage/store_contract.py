"""What every ArtifactStore must do; test modules subclass `StoreContract` with a `store` fixture.

The class name does not start with "Test", so pytest collects it only through the subclasses
in test_local_store.py and test_s3_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patient_ml.exceptions import NotFoundError, PatientMLError
from patient_ml.storage import ArtifactNotFoundError, ArtifactStore, ArtifactStoreError

BAD_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a\\b", "./a", "a/", "a/./b"]


class StoreContract:
    """Round trips, errors and key rules shared by both stores (fixture: `store`)."""

    def test_exists_put_bytes_overwrite_read(self, store: ArtifactStore) -> None:
        assert not store.exists("a/b.txt")
        store.put_bytes("a/b.txt", b"one")
        assert store.exists("a/b.txt")
        store.put_bytes("a/b.txt", b"two")
        assert store.read_bytes("a/b.txt") == b"two"
        store.put_bytes("empty", b"")
        assert store.exists("empty") and store.read_bytes("empty") == b""

    def test_put_file_and_get_file(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = tmp_path / "model.bin"
        source.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, not a repeated single byte
        store.put_file("models/m/model.bin", source)
        dest = tmp_path / "out" / "nested" / "copy.bin"
        assert store.get_file("models/m/model.bin", dest) == dest
        assert dest.read_bytes() == source.read_bytes()
        dest.write_bytes(b"stale")  # get_file replaces an existing file
        store.get_file("models/m/model.bin", dest)
        assert dest.read_bytes() == source.read_bytes()
        assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp files

    def test_put_file_of_a_missing_file_names_it(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        with pytest.raises(PatientMLError, match=r"nope\.bin"):
            store.put_file("k", tmp_path / "nope.bin")
        assert not store.exists("k")

    def test_open_read_behaves_like_a_file(self, store: ArtifactStore) -> None:
        store.put_bytes("m/manifest.jsonl", b'{"a": 1}\n{"b": 2}\n' + b"x" * 5000)
        with store.open_read("m/manifest.jsonl") as fh:
            assert next(iter(fh)) == b'{"a": 1}\n'  # iteration yields lines, not chunks
            assert fh.readline() == b'{"b": 2}\n'
            assert fh.read(3) == b"xxx"
            assert len(fh.read()) == 4997

    def test_put_if_absent(self, store: ArtifactStore) -> None:
        assert store.put_if_absent_bytes("images/ab/abcd.png", b"img") is True
        assert store.put_if_absent_bytes("images/ab/abcd.png", b"other") is False
        assert store.read_bytes("images/ab/abcd.png") == b"img"

    def test_list_keys_sorted_relative_and_folder_like(self, store: ArtifactStore) -> None:
        for key in ["z/1", "a/c/2", "a/cat.txt", "a/c/1", "b"]:
            store.put_bytes(key, key.encode())
        assert list(store.list_keys()) == ["a/c/1", "a/c/2", "a/cat.txt", "b", "z/1"]
        assert list(store.list_keys("a/c")) == ["a/c/1", "a/c/2"]  # not a/cat.txt
        assert list(store.list_keys("a/c/")) == ["a/c/1", "a/c/2"]
        assert list(store.list_keys("a")) == ["a/c/1", "a/c/2", "a/cat.txt"]
        assert list(store.list_keys("nothing/here")) == []
        assert list(store.list_keys("b")) == []  # a key is not a folder

    def test_delete_prefix(self, store: ArtifactStore) -> None:
        for key in ["d/1/x", "d/1/y", "d/2/x", "d10/x", "e"]:
            store.put_bytes(key, b".")
        assert store.delete_prefix("d/1") == 2
        assert list(store.list_keys()) == ["d/2/x", "d10/x", "e"]
        assert store.delete_prefix("d") == 1  # d10/ is another folder
        assert store.delete_prefix("nothing") == 0
        assert store.delete_prefix("") == 2
        assert list(store.list_keys()) == []

    def test_missing_key_names_the_uri(self, store: ArtifactStore, tmp_path: Path) -> None:
        uri = store.uri("no/such.key")
        with pytest.raises(ArtifactNotFoundError) as info:
            store.read_bytes("no/such.key")
        assert uri in str(info.value) and isinstance(info.value, NotFoundError)
        with pytest.raises(ArtifactNotFoundError, match="no/such"), store.open_read("no/such.key"):
            pass
        with pytest.raises(ArtifactNotFoundError, match="no/such"):
            store.get_file("no/such.key", tmp_path / "dl" / "x")
        assert not (tmp_path / "dl" / "x").exists()
        assert not store.exists("no/such.key")

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_are_refused(self, store: ArtifactStore, key: str) -> None:
        calls = [
            lambda: store.put_bytes(key, b"x"),
            lambda: store.put_if_absent_bytes(key, b"x"),
            lambda: store.read_bytes(key),
            lambda: store.exists(key),
        ]
        for call in calls:
            with pytest.raises(ArtifactStoreError, match="not a relative path") as info:
                call()
            assert info.value.fix and "datasets/" in info.value.fix
        assert list(store.list_keys()) == []

    @pytest.mark.parametrize("prefix", ["/abs", "a/../b", "a//b", "a\\b"])
    def test_bad_prefixes_are_refused(self, store: ArtifactStore, prefix: str) -> None:
        with pytest.raises(ArtifactStoreError, match="not a relative path"):
            list(store.list_keys(prefix))
        with pytest.raises(ArtifactStoreError, match="not a relative path"):
            store.delete_prefix(prefix)

    def test_description_and_repr(self, store: ArtifactStore) -> None:
        assert store.description and store.description in repr(store)
        assert "testing" not in store.description  # never the credentials
