"""Artifact store on a local (or mounted) folder; the embedded default."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from patient_ml.storage.base import ArtifactStore, check_key, check_prefix
from patient_ml.storage.errors import ArtifactNotFoundError, ArtifactStoreError


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.description = f"folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _write_atomic(self, key: str, writer: object, *, replace: bool = True) -> bool:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as exc:
            raise ArtifactStoreError(
                f"Cannot write under {self.root}: {exc.strerror or exc}.",
                fix="check the folder's permissions and free space, or set PATIENT_ML_ARTIFACT_URI",
            ) from None
        try:
            with os.fdopen(fd, "wb") as out:
                writer(out)  # type: ignore[operator]
            if replace:
                os.replace(tmp, target)
                return True
            try:
                os.link(tmp, target)  # atomic "create if absent"
                return True
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomic(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._write_atomic(key, lambda out: shutil.copyfileobj(src, out, 1 << 20))

    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        return self._write_atomic(key, lambda out: out.write(data), replace=False)

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            fh = open(path, "rb")  # noqa: SIM115  (closed below)
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(
                f"No artifact at {self.uri(key)}.", fix="check the key or re-run curation"
            ) from None
        with fh:
            yield fh

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with self.open_read(key) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
        return dest

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        prefix = check_prefix(prefix)
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return iter(())
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )
        return iter(keys)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri() + "/"

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list_keys(prefix))
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        return len(keys)
