"""Artifact store on a local (or mounted) folder; the embedded default.

Every write goes to a temporary file in the target's folder and is then moved into place with
`os.replace` (overwrite) or `os.link` (create only if absent), so readers never see a partial
file and concurrent `put_if_absent_bytes` calls leave exactly one intact file. On a file system
without hard links it falls back to check-then-replace, harmless for the content-addressed keys
that use it. Temporary files are named `.<name>.<random>.pml-tmp` and are never listed as keys.
Files get the mode `open()` would give them (0o666 minus the umask), not mkstemp's 0o600.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from patient_ml.storage.base import ArtifactStore, check_key, check_prefix, source_file
from patient_ml.storage.errors import ArtifactNotFoundError, ArtifactStoreError

TMP_SUFFIX = ".pml-tmp"
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
_CHUNK = 1 << 20
_FIX_WRITE = "check the folder's permissions and free space, or set PATIENT_ML_ARTIFACT_URI"


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


@functools.cache
def _file_mode() -> int:
    """0o666 minus the process umask: what `open(..., "w")` would give (mkstemp gives 0o600)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: read the umask by setting it and putting it back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(target: Path, writer: Callable[[BinaryIO], object], *, replace: bool) -> bool:
    """Write `target` through a temporary sibling; with replace=False never overwrite.

    Returns False only when replace=False and `target` already exists. The temporary file is
    removed in every case.
    """
    try:  # the folder usually exists (content-addressed keys share 256 of them): no mkdir
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), _file_mode())
            writer(out)
        if replace:
            os.replace(tmp, target)
            return True
        try:
            os.link(tmp, target)  # atomic "create if absent": fails if target exists
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # File system without hard links: check, then replace. Callers use
            # content-addressed keys, so a racing writer puts the same bytes.
            if target.exists():
                return False
            os.replace(tmp, target)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under `root` (created on the first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def description(self) -> str:
        return f"folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write(self, key: str, writer: Callable[[BinaryIO], object], *, replace: bool) -> bool:
        target = self._path(key)
        try:
            return atomic_write(target, writer, replace=replace)
        except OSError as exc:
            raise ArtifactStoreError(
                f"Cannot write {self.uri(key)}: {exc.strerror or exc}.", fix=_FIX_WRITE
            ) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data), replace=True)

    def put_file(self, key: str, path: Path) -> None:
        source = source_file(path)
        with source.open("rb") as src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, _CHUNK), replace=True)

    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        if self.exists(key):  # cheap path; the link below settles races
            return False
        return self._write(key, lambda out: out.write(data), replace=False)

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFoundError(
                f"No artifact at {self.uri(key)}.",
                fix="check the key, or re-run the step that writes it",
            ) from None
        except OSError as exc:
            raise ArtifactStoreError(
                f"Cannot read {self.uri(key)}: {exc.strerror or exc}.",
                fix="check the folder's permissions",
            ) from None
        with fh:
            yield fh

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        with self.open_read(key) as src:
            try:
                atomic_write(dest, lambda out: shutil.copyfileobj(src, out, _CHUNK), replace=True)
            except OSError as exc:
                raise ArtifactStoreError(
                    f"Cannot write {dest} from {self.uri(key)}: {exc.strerror or exc}.",
                    fix="check the destination folder's permissions and free space",
                ) from None
        return dest

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / check_prefix(prefix)
        if not base.is_dir():
            return iter(())
        keys = sorted(
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if not _is_temp(path.name) and path.is_file()
        )
        return iter(keys)

    def uri(self, key: str) -> str:
        if not key:
            return self.root.as_uri() + "/"
        return self._path(key).as_uri()

    def delete_prefix(self, prefix: str) -> int:
        """Delete the files under `prefix`, then the folders that became empty."""
        normalised = check_prefix(prefix)
        deleted = 0
        for key in list(self.list_keys(normalised)):
            try:
                self._path(key).unlink()
                deleted += 1
            except FileNotFoundError:
                pass  # removed concurrently
            except OSError as exc:
                raise ArtifactStoreError(
                    f"Cannot delete {self.uri(key)}: {exc.strerror or exc}.", fix=_FIX_WRITE
                ) from None
        self._prune_empty_dirs(self.root / normalised)
        return deleted

    def _prune_empty_dirs(self, top: Path) -> None:
        """Remove now-empty folders under and including `top`, never the root itself."""
        if not top.is_dir():
            return
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if top != self.root:
            with contextlib.suppress(OSError):
                top.rmdir()
