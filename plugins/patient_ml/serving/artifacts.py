"""Bring a run's packed model (`model.tar.gz` in the artifact store) to a local folder that a
server can mount: the bytes are checked against the sha256 recorded at training time and
extracted with tarfile's `data` filter (no absolute paths, links out, devices or setuid)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

from patient_ml.exceptions import PatientMLError
from patient_ml.storage import ArtifactStore
from patient_ml.storage.archives import safe_extract


class ModelArtifactError(PatientMLError):
    """A run's model artifact is missing, altered or unreadable."""


def fetch_model(
    store: ArtifactStore, uri: str | None, sha256: str | None, dest: Path, *, who: str
) -> Path:
    """Extract the model at `uri` into `dest` (replaced); returns `dest`."""
    if not uri:
        raise ModelArtifactError(
            f"{who} has no model artifact.",
            fix="finish its tune stage, or approve a run that has a model",
        )
    dest = Path(dest)
    packed = dest.with_name(dest.name + ".tar.gz")
    try:
        store.get_file(store.key_of(uri), packed)
    except PatientMLError as exc:
        raise ModelArtifactError(
            f"{who}: its model artifact {uri} cannot be read: {exc.message}",
            fix="restore the artifact, or approve another run as champion",
        ) from None
    digest = hashlib.sha256()
    with open(packed, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if sha256 and digest.hexdigest() != sha256:
        raise ModelArtifactError(
            f"{who}: its model artifact {uri} has sha256 {digest.hexdigest()[:12]}..., not the "
            f"{sha256[:12]}... recorded when it was trained; it was changed or corrupted.",
            fix="restore the original artifact, or approve another run as champion",
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(packed, "r:gz") as tar:
            safe_extract(tar, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelArtifactError(
            f"{who}: its model artifact {uri} is not a readable model.tar.gz ({exc}).",
            fix="restore the artifact, or approve another run as champion",
        ) from None
    finally:
        packed.unlink(missing_ok=True)
    return dest
