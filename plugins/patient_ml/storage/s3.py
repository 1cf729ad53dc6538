"""Artifact store in an S3 bucket (or any S3-compatible endpoint) via the Amazon provider.

Credentials, region and endpoint come from the Airflow AWS connection (`aws_conn_id`), so the
same store works on AWS, MinIO or moto. botocore and Airflow are imported only when used.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from patient_ml.storage.base import ArtifactStore, check_key, check_prefix
from patient_ml.storage.errors import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ArtifactStoreError(
            f"{url!r} is not an S3 URL.", fix="write it as s3://bucket/optional/prefix"
        )
    return parts.netloc, parts.path.lstrip("/")


class _Client:
    """One boto3 client per connection id, created lazily (thread-safe)."""

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
                        f"Cannot create an S3 client from Airflow connection {aws_conn_id!r}: "
                        f"{type(exc).__name__}.",
                        fix="check the connection (credentials, region, endpoint_url extra)",
                    ) from None
                cls._clients[aws_conn_id] = client
            return client

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._clients.clear()


def _translate(exc: Exception, bucket: str, key: str, conn_id: str) -> Exception:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return ArtifactNotFoundError(f"No object at {where}.", fix="check the key")
        if code == "NoSuchBucket":
            return ArtifactStoreError(
                f"Bucket {bucket!r} does not exist.",
                fix="create the bucket or fix PATIENT_ML_ARTIFACT_URI / the image URL",
            )
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return ArtifactStoreError(
                f"Access to {where} was denied ({code}) for Airflow connection {conn_id!r}.",
                fix="grant the connection's identity access to the bucket",
            )
        return ArtifactStoreError(f"S3 refused a request on {where}: {code}.", fix="retry")
    if isinstance(exc, BotoCoreError):
        return ArtifactStoreError(
            f"S3 could not be reached for {where} with Airflow connection {conn_id!r}: "
            f"{type(exc).__name__}.",
            fix="check the connection's endpoint_url, region and the network",
        )
    return exc


class S3ArtifactStore(ArtifactStore):
    def __init__(self, bucket: str, prefix: str = "", *, aws_conn_id: str = "aws_default") -> None:
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self.aws_conn_id = aws_conn_id
        self.description = f"s3://{bucket}/{self.prefix} (connection {aws_conn_id!r})"

    @property
    def client(self) -> Any:
        return _Client.get(self.aws_conn_id)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, key: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise _translate(exc, self.bucket, self.prefix + key, self.aws_conn_id) from None

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.client.head_object, Key=self._key(key))
            return True
        except ArtifactNotFoundError:
            return False

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(key, self.client.put_object, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except Exception as exc:
            raise _translate(exc, self.bucket, self._key(key), self.aws_conn_id) from None

    def put_if_absent_bytes(self, key: str, data: bytes) -> bool:
        # Not atomic on S3, but harmless: callers use content-addressed keys, so a racing
        # writer writes the same bytes.
        if self.exists(key):
            return False
        self.put_bytes(key, data)
        return True

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        response = self._call(key, self.client.get_object, Key=self._key(key))
        body = response["Body"]
        try:
            yield body
        finally:
            body.close()

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise _translate(exc, self.bucket, self._key(key), self.aws_conn_id) from None
        os.replace(tmp, dest)
        return dest

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + check_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _translate(exc, self.bucket, full, self.aws_conn_id) from None
        return iter(sorted(keys))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list_keys(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            self._call(prefix, self.client.delete_objects, Delete={"Objects": batch})
        return len(keys)


def read_s3_url(
    url: str, *, aws_conn_id: str = "aws_default", max_bytes: int | None = None
) -> bytes:
    """One object by URL, refusing (before reading the body) one larger than `max_bytes`."""
    bucket, key = parse_s3_url(url)
    client = _Client.get(aws_conn_id)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _translate(exc, bucket, key, aws_conn_id) from None
    body = response["Body"]
    try:
        size = int(response.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            raise ArtifactTooLargeError(
                f"s3://{bucket}/{key} has {size} bytes, above the limit of {max_bytes}.",
                fix="raise curation.maxImageBytes if such files are expected",
            )
        data = body.read() if max_bytes is None else body.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise ArtifactTooLargeError(
                f"s3://{bucket}/{key} is above the limit of {max_bytes} bytes.",
                fix="raise curation.maxImageBytes if such files are expected",
            )
        return data
    finally:
        body.close()
