"""Artifact stores: a local folder (default) or an S3 bucket, chosen by URI.

`PATIENT_ML_ARTIFACT_URI` (see `patient_ml.settings.artifact_uri`) picks the store:
`file:///abs/folder`, a plain path, or `s3://bucket/optional/prefix`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from patient_ml.storage.base import ArtifactStore
from patient_ml.storage.errors import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
)
from patient_ml.storage.local import LocalArtifactStore
from patient_ml.storage.s3 import S3ArtifactStore, parse_s3_url, read_s3_url

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactStoreError",
    "ArtifactTooLargeError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "artifact_store_from_uri",
    "read_s3_url",
]


def artifact_store_from_uri(uri: str, *, aws_conn_id: str = "aws_default") -> ArtifactStore:
    text = str(uri).strip()
    scheme = urlsplit(text).scheme.lower()
    if scheme == "s3":
        bucket, prefix = parse_s3_url(text)
        return S3ArtifactStore(bucket, prefix, aws_conn_id=aws_conn_id)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in {"", "localhost"}:
            raise ArtifactStoreError(
                f"Artifact URI {text!r} names a host.", fix="use file:///absolute/folder"
            )
        return LocalArtifactStore(Path(unquote(parts.path)))
    if not scheme and text:
        return LocalArtifactStore(Path(text))
    raise ArtifactStoreError(
        f"Artifact URI {text!r} is not supported.",
        fix="use file:///absolute/folder, a folder path, or s3://bucket/prefix",
    )
