"""The artifact store interface: snapshots, images, models and reports by relative key.

A key is a relative POSIX path such as `datasets/ab/snapshots/x/manifest.jsonl`. Keys never
start with `/`, never contain `..`, `.`, backslashes or empty segments, so a key can neither
escape the store root nor mean two different objects on a folder and on S3.

Prefixes (for `list_keys` and `delete_prefix`) are folder-like on every store: `a/c` means
"everything under `a/c/`" and does not match `a/cat.txt`. The empty prefix means everything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from patient_ml.exceptions import PatientMLError
from patient_ml.storage.errors import ArtifactNotFoundError, ArtifactStoreError

KEY_EXAMPLE = "datasets/<id>/snapshots/<sid>/manifest.jsonl"


def check_key(key: str) -> str:
    """Return `key` unchanged, or raise ArtifactStoreError when it is not a safe relative path."""
    if not isinstance(key, str):
        raise ArtifactStoreError(
            f"Artifact key {key!r} is a {type(key).__name__}, not a string.",
            fix=f"pass a relative path like {KEY_EXAMPLE!r}",
        )
    problem = _key_problem(key)
    if problem:
        raise ArtifactStoreError(
            f"Artifact key {key!r} is not a relative path: {problem}.",
            fix=f"use keys like {KEY_EXAMPLE!r}",
        )
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it is absolute"
    if "\\" in key:
        return "it contains a backslash"
    if "\x00" in key:
        return "it contains a NUL character"
    parts = key.split("/")
    if any(part == "" for part in parts):
        return "it has an empty segment (// or a trailing /)"
    if any(part in {".", ".."} for part in parts):
        return "it has a '.' or '..' segment"
    return None


def check_prefix(prefix: str) -> str:
    """Normalise a folder-like prefix: "" stays "", "a/b" and "a/b/" become "a/b/"."""
    if not prefix or not prefix.strip("/"):
        return ""
    return check_key(prefix.rstrip("/")) + "/"


def source_file(path: Path) -> Path:
    """`path` as a Path when it is an existing regular file (what `put_file` uploads)."""
    path = Path(path)
    if not path.is_file():
        raise PatientMLError(
            f"Cannot store {path}: it is not an existing regular file.",
            fix="check the path of the local file to store",
        )
    return path


class ArtifactStore(ABC):
    """Where patient_ml keeps its files. Writes are atomic: a reader sees all or nothing.

    Implementations are safe to share between threads.
    """

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the store is, for logs and messages (never credentials)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when an artifact is stored at `key`."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` at `key`, replacing what was there."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload the local file `path` to `key` without reading it fully into memory."""

    @abstractmethod
    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        """Write unless the key exists (content-addressed keys); True when this call wrote."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole artifact; ArtifactNotFoundError (naming the URI) when it is missing."""

    @abstractmethod
    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A context manager yielding a binary file-like object (iterating it yields lines)."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path:
        """Download to `dest` (parents created); `dest` appears complete or not at all."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under the folder-like `prefix`, sorted, relative to the store root."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Absolute URI of `key`: file:///abs/path or s3://bucket/prefix/key."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under the folder-like `prefix`; the number deleted."""

    def key_of(self, uri: str) -> str:
        """The key of an absolute URI of this store (the inverse of `uri`)."""
        root = self.uri("")
        root = root if root.endswith("/") else root + "/"
        if not uri.startswith(root) or uri == root:
            raise ArtifactNotFoundError(
                f"Artifact {uri} is not in the configured artifact store ({self.description}).",
                fix="point PATIENT_ML_ARTIFACT_URI (or the operator's artifact_uri) at the store "
                "the run was trained with",
            )
        return check_key(uri[len(root) :])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
