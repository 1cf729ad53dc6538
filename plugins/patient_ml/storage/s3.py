"""Artifact store in an S3 bucket (or any S3-compatible endpoint) via the Amazon provider.

Credentials, region and endpoint come from the Airflow AWS connection (`aws_conn_id`), so the
same store works on AWS, MinIO or moto. Airflow, boto3 and botocore are imported only when a
store first talks to S3, which keeps `import patient_ml.storage` cheap.

botocore errors become patient_ml errors: a missing object (NoSuchKey, 404) is
ArtifactNotFoundError; a missing bucket, denied access, missing credentials or an unreachable
endpoint is ArtifactStoreError naming the bucket or the connection id and the fix.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from patient_ml.storage.base import ArtifactStore, check_key, check_prefix, source_file
from patient_ml.storage.errors import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
)
from patient_ml.storage.local import TMP_SUFFIX

if TYPE_CHECKING:
    from typing_extensions import Buffer

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
_READ_BUFFER = 1 << 16


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key"); the key part may be empty."""
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise ArtifactStoreError(
            f"{url!r} is not an S3 URL.", fix="write it as s3://bucket/optional/prefix"
        )
    return parts.netloc, parts.path.lstrip("/")


class _Client:
    """One boto3 client per Airflow connection id, created on first use (thread-safe).

    boto3 clients are thread-safe and building one (connection lookup, session, endpoint
    resolution) costs ~0.3 s, so stores and `read_s3_url` share them. Call `reset(conn_id)`
    after redefining a connection in the same process.
    """

    _lock = threading.Lock()
    _clients: dict[str, Any] = {}

    @classmethod
    def get(cls, aws_conn_id: str) -> Any:
        with cls._lock:
            client = cls._clients.get(aws_conn_id)
            if client is None:
                from airflow.providers.amazon.aws.hooks.s3 import S3Hook

                try:
                    client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
                except Exception as exc:
                    raise ArtifactStoreError(
                        f"Cannot create an S3 client from Airflow connection {aws_conn_id!r} "
                        f"({type(exc).__name__}).",
                        fix="check the connection's credentials, region and endpoint_url extra",
                    ) from None
                cls._clients[aws_conn_id] = client
            return client

    @classmethod
    def reset(cls, aws_conn_id: str | None = None) -> None:
        """Forget the client of one connection id, or of all."""
        with cls._lock:
            if aws_conn_id is None:
                cls._clients.clear()
            else:
                cls._clients.pop(aws_conn_id, None)


def _translate(exc: Exception, bucket: str, key: str, conn_id: str) -> Exception:
    """The patient_ml error for a botocore error on s3://bucket/key; other errors unchanged."""
    from botocore import exceptions as boto

    where = f"s3://{bucket}/{key}"
    connection = f"Airflow connection {conn_id!r}"
    if isinstance(exc, boto.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return ArtifactNotFoundError(
                f"No object at {where}.", fix="check the key, or re-run the step that writes it"
            )
        if code == "NoSuchBucket":
            return ArtifactStoreError(
                f"Bucket {bucket!r} does not exist (at the endpoint of {connection}).",
                fix="create the bucket or fix PATIENT_ML_ARTIFACT_URI",
            )
        if code in _BAD_CREDENTIALS:
            return ArtifactStoreError(
                f"S3 rejected the credentials of {connection} ({code}) for {where}.",
                fix=f"update the access key, secret or session token of connection {conn_id!r}",
            )
        if code in _DENIED:
            return ArtifactStoreError(
                f"Access to {where} was denied ({code}) for {connection}.",
                fix="grant the connection's identity access to the bucket",
            )
        return ArtifactStoreError(
            f"S3 refused a request on {where} with {connection}: {code or 'unknown error'}.",
            fix="check the bucket and the connection, then retry",
        )
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return ArtifactStoreError(
            f"No complete AWS credentials for {connection} (needed for {where}).",
            fix=(
                f"define connection {conn_id!r} with a login/password (access key/secret) "
                "or give the worker an IAM role"
            ),
        )
    if isinstance(exc, boto.ConnectionError):
        return ArtifactStoreError(
            f"S3 could not be reached for {where} with {connection} ({type(exc).__name__}).",
            fix="check the connection's endpoint_url and region extras and the network",
        )
    if isinstance(exc, boto.ParamValidationError):
        return ArtifactStoreError(
            f"Invalid S3 request for {where}: {exc}.", fix="check the bucket name and key"
        )
    if isinstance(exc, boto.BotoCoreError) or type(exc).__module__.startswith("boto3"):
        # boto3's transfer manager wraps the botocore error (S3UploadFailedError): use it.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, boto.ClientError | boto.BotoCoreError):
            return _translate(cause, bucket, key, conn_id)
        return ArtifactStoreError(
            f"S3 request for {where} with {connection} failed ({type(exc).__name__}).",
            fix="check the connection's endpoint_url, region and the network, then retry",
        )
    return exc


class _StreamingBody(Protocol):
    """What is used of botocore's StreamingBody (botocore ships no types)."""

    def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


class _Body(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, with read errors translated.

    Wrapped in io.BufferedReader it behaves like a local file: `for line in fh` yields lines
    (a bare StreamingBody yields 1 KiB chunks), and readline/read(n) work.
    """

    def __init__(self, body: _StreamingBody, on_error: Callable[[Exception], Exception]) -> None:
        self._body = body
        self._on_error = on_error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            chunk = self._body.read(len(view))
        except Exception as exc:
            raise self._on_error(exc) from None
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects `prefix + key` in `bucket`, reached through an Airflow connection.

    The boto3 client is built on first use, not here, so constructing a store is free.
    """

    def __init__(self, bucket: str, prefix: str = "", *, aws_conn_id: str = "aws_default") -> None:
        if not bucket or "/" in bucket:
            raise ArtifactStoreError(
                f"S3 bucket name {bucket!r} is not valid.", fix="use s3://bucket/optional/prefix"
            )
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/"))  # "/a/b/", "a/b" -> "a/b/"
        self.aws_conn_id = aws_conn_id

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} (Airflow connection {self.aws_conn_id!r})"

    @property
    def client(self) -> Any:
        return _Client.get(self.aws_conn_id)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, exc: Exception, full_key: str) -> Exception:
        return _translate(exc, self.bucket, full_key, self.aws_conn_id)

    def _call(self, method: str, full_key: str, **kwargs: object) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._error(exc, full_key) from None

    def exists(self, key: str) -> bool:
        """True when the object exists. A missing bucket also answers False (HEAD gives 404)."""
        full = self._key(key)
        try:
            self._call("head_object", full, Key=full)
        except ArtifactNotFoundError:
            return False
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        self._call("put_object", full, Key=full, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """Streamed from disk by boto3's transfer manager (multipart above 8 MiB)."""
        full = self._key(key)
        source = source_file(path)
        try:
            self.client.upload_file(str(source), self.bucket, full)
        except Exception as exc:
            raise self._error(exc, full) from None

    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        """HEAD, then PUT when missing.

        Two racing writers may both PUT and both return True. That is benign: callers use
        content-addressed keys (same key, same bytes) and a PUT is atomic, so readers never
        see a partial or different object.
        """
        if self.exists(key):
            return False
        self.put_bytes(key, data)
        return True

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        full = self._key(key)
        response = self._call("get_object", full, Key=full)
        raw = _Body(response["Body"], lambda exc: self._error(exc, full))
        with io.BufferedReader(raw, buffer_size=_READ_BUFFER) as fh:
            yield fh  # type: ignore[misc]

    def get_file(self, key: str, dest: Path) -> Path:
        full = self._key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
        try:
            self.client.download_file(self.bucket, full, str(tmp))
            os.replace(tmp, dest)
        except Exception as exc:
            raise self._error(exc, full) from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + check_prefix(prefix)
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._error(exc, full) from None
        return iter(sorted(keys))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key) if key else self.prefix}"

    def delete_prefix(self, prefix: str) -> int:
        """Delete in batches of 1,000 (DeleteObjects); fails if S3 reports any key undeleted."""
        full = self.prefix + check_prefix(prefix)
        keys = list(self.list_keys(prefix))
        deleted = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self.prefix + k} for k in keys[start : start + _DELETE_BATCH]]
            response = self._call("delete_objects", full, Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise ArtifactStoreError(
                    f"S3 did not delete {len(errors)} of {len(batch)} objects under "
                    f"s3://{self.bucket}/{full}, e.g. {first.get('Key')!r}: "
                    f"{first.get('Code')}.",
                    fix="check that the connection may delete objects, then retry",
                )
            deleted += len(batch)
        return deleted


def read_s3_url(
    url: str, *, aws_conn_id: str = "aws_default", max_bytes: int | None = None
) -> bytes:
    """The object at `s3://bucket/key`, refusing one larger than `max_bytes`.

    The size is checked from the response's ContentLength before the body is read, and at most
    `max_bytes + 1` bytes of the body are read, so a wrong length cannot make it read more.
    Raises ArtifactNotFoundError when the object is missing and ArtifactTooLargeError (an
    ArtifactStoreError) when it is too large.
    """
    bucket, key = parse_s3_url(url)
    if not key or key.endswith("/"):
        raise ArtifactStoreError(
            f"{url!r} names no object.", fix="write it as s3://bucket/path/to/object"
        )
    if max_bytes is not None and max_bytes < 0:
        raise ArtifactStoreError(
            f"max_bytes must be at least 0, got {max_bytes}.", fix="pass a size in bytes"
        )
    client = _Client.get(aws_conn_id)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _translate(exc, bucket, key, aws_conn_id) from None
    body = response["Body"]
    try:
        size = int(response.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            raise _too_large(bucket, key, max_bytes, size)
        try:
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
        except Exception as exc:
            raise _translate(exc, bucket, key, aws_conn_id) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_large(bucket, key, max_bytes, None)
        return data
    finally:
        body.close()


def _too_large(bucket: str, key: str, limit: int, size: int | None) -> ArtifactTooLargeError:
    has = f"has {size} bytes" if size is not None else "is larger"
    return ArtifactTooLargeError(
        f"s3://{bucket}/{key} {has}, above the limit of {limit} bytes.",
        fix="raise the size limit (curation.maxImageBytes) if such files are expected",
    )
