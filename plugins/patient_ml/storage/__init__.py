"""Artifact stores: a local folder (default) or an S3 bucket, chosen by URI.

`PATIENT_ML_ARTIFACT_URI` (see `patient_ml.settings.artifact_uri`) picks the store:
`file:///abs/folder`, a plain path, or `s3://bucket/optional/prefix`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from patient_ml import settings
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


_ACCEPTED = "file:///absolute/folder, a folder path (absolute or relative), or s3://bucket/prefix"


def artifact_store_from_uri(uri: str, *, aws_conn_id: str = "aws_default") -> ArtifactStore:
    """The store named by `uri`.

    - `file:///abs/folder` (or `file://localhost/abs/folder`) -> LocalArtifactStore
    - a plain path, absolute or relative (resolved against the working directory; `~` is
      expanded) -> LocalArtifactStore
    - `s3://bucket` or `s3://bucket/optional/prefix` -> S3ArtifactStore using the Airflow
      connection `aws_conn_id`

    Anything else raises ArtifactStoreError (a PatientMLError) listing the accepted forms.
    Nothing is created or contacted here: folders appear on the first write, S3 is reached on
    the first call.
    """
    text = str(uri).strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        bucket, prefix = parse_s3_url(text)
        return S3ArtifactStore(bucket, prefix, aws_conn_id=aws_conn_id)
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in {"", "localhost"} or not path.startswith("/"):
            raise ArtifactStoreError(
                f"Artifact URI {text!r} is not a local absolute file URI.", fix=f"use {_ACCEPTED}"
            )
        return LocalArtifactStore(Path(path))
    if text and not scheme:
        return LocalArtifactStore(Path(text))
    raise ArtifactStoreError(f"Artifact URI {text!r} is not supported.", fix=f"use {_ACCEPTED}")


def default_artifact_store(*, aws_conn_id: str = "aws_default") -> ArtifactStore:
    """The store of PATIENT_ML_ARTIFACT_URI (default: $PATIENT_ML_HOME/artifacts)."""
    return artifact_store_from_uri(settings.artifact_uri(), aws_conn_id=aws_conn_id)
