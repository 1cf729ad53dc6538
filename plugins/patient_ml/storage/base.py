"""The artifact store interface: snapshots, images, models and reports by relative key."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from patient_ml.storage.errors import ArtifactStoreError


def check_key(key: str) -> str:
    """Keys are relative POSIX paths without `..`, backslashes or empty segments."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or any(part in {"", ".", ".."} for part in parts)
    ):
        raise ArtifactStoreError(
            f"Artifact key {key!r} is not a relative path.",
            fix="use keys like 'datasets/<id>/snapshots/<sid>/manifest.jsonl'",
        )
    return key


def check_prefix(prefix: str) -> str:
    return check_key(prefix.rstrip("/")) + "/" if prefix.strip("/") else ""


class ArtifactStore(ABC):
    """Where patient_ml keeps its files. Writes are atomic: a reader sees all or nothing."""

    description: str

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        """Write unless the key exists (content-addressed keys); True when written."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]: ...

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted, relative to the store root."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...
