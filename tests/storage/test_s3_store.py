"""S3ArtifactStore and read_s3_url against a real S3-compatible HTTP endpoint (moto server),
reached through an Airflow AWS connection defined by an AIRFLOW_CONN_* variable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from patient_ml.storage import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
    S3ArtifactStore,
    read_s3_url,
)
from patient_ml.storage.s3 import _Client
from tests.s3_server import S3Server
from tests.storage.store_contract import StoreContract


class TestS3StoreContract(StoreContract):
    @pytest.fixture
    def store(self, s3: S3Server) -> S3ArtifactStore:
        return S3ArtifactStore(s3.new_bucket(), "root/prefix", aws_conn_id=s3.conn_id)


class TestS3StoreWithoutPrefix(StoreContract):
    @pytest.fixture
    def store(self, s3: S3Server) -> S3ArtifactStore:
        return S3ArtifactStore(s3.new_bucket(), aws_conn_id=s3.conn_id)


def test_prefix_scopes_keys_and_uris(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="outside/x", Body=b"o")
    s3.client().put_object(Bucket=bucket, Key="rootish/x", Body=b"o")
    store = S3ArtifactStore(bucket, "/root/", aws_conn_id=s3.conn_id)
    store.put_bytes("a/b", b"in")
    assert s3.client().get_object(Bucket=bucket, Key="root/a/b")["Body"].read() == b"in"
    assert list(store.list_keys()) == ["a/b"]
    assert store.uri("a/b") == f"s3://{bucket}/root/a/b"
    assert store.delete_prefix("") == 1
    objects = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in objects) == ["outside/x", "rootish/x"]
    assert store.description == f"s3://{bucket}/root/ (Airflow connection 'aws_test')"


def test_list_and_delete_more_than_one_page(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    keys = [f"p/k{n:05d}" for n in range(1050)] + ["p2/other"]
    s3.put_many(bucket, keys)
    store = S3ArtifactStore(bucket, aws_conn_id=s3.conn_id)
    listed = list(store.list_keys("p"))
    assert listed == keys[:1050]  # both pages (1,000 + 50), sorted, p2/ excluded
    assert store.delete_prefix("p") == 1050  # two DeleteObjects batches
    assert list(store.list_keys()) == ["p2/other"]


def test_large_file_goes_up_in_parts_and_comes_back(s3: S3Server, tmp_path: Path) -> None:
    source = tmp_path / "model.tar.gz"
    source.write_bytes(bytes(range(256)) * (9 * 4096))  # 9 MiB: above the 8 MiB multipart cut
    store = S3ArtifactStore(s3.new_bucket(), aws_conn_id=s3.conn_id)
    store.put_file("models/m.tar.gz", source)
    head = s3.client().head_object(Bucket=store.bucket, Key="models/m.tar.gz")
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of 2 parts
    dest = store.get_file("models/m.tar.gz", tmp_path / "dl" / "m.tar.gz")
    assert dest.read_bytes() == source.read_bytes()


def test_concurrent_put_if_absent_keeps_one_intact_object(s3: S3Server) -> None:
    store = S3ArtifactStore(s3.new_bucket(), aws_conn_id=s3.conn_id)
    data = b"content-addressed" * 1000
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def put() -> None:
        barrier.wait()
        results.append(store.put_if_absent_bytes("images/ab/abc.png", data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and True in results  # racing writers may each write (same bytes)
    assert store.read_bytes("images/ab/abc.png") == data
    assert list(store.list_keys()) == ["images/ab/abc.png"]


@pytest.fixture
def missing_bucket(s3: S3Server) -> S3ArtifactStore:
    return S3ArtifactStore("pml-no-such-bucket", "p", aws_conn_id=s3.conn_id)


def test_missing_bucket_says_so_with_the_fix(
    missing_bucket: S3ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls = {
        "put_bytes": lambda: missing_bucket.put_bytes("k", b"x"),
        "put_if_absent_bytes": lambda: missing_bucket.put_if_absent_bytes("k", b"x"),
        "put_file": lambda: missing_bucket.put_file("k", source),
        "read_bytes": lambda: missing_bucket.read_bytes("k"),
        "list_keys": lambda: list(missing_bucket.list_keys()),
        "delete_prefix": lambda: missing_bucket.delete_prefix(""),
    }
    for name, call in calls.items():
        with pytest.raises(ArtifactStoreError) as info:
            call()
        assert not isinstance(info.value, ArtifactNotFoundError), name
        assert "'pml-no-such-bucket' does not exist" in info.value.message, name
        assert info.value.fix == "create the bucket or fix PATIENT_ML_ARTIFACT_URI", name
    assert missing_bucket.exists("k") is False  # HEAD cannot tell a missing bucket apart


def test_unreachable_endpoint_names_the_connection(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = S3Server("http://127.0.0.1:9", conn_id="aws_dead")  # port 9 (discard): refused
    monkeypatch.setenv(dead.conn_env_var, dead.connection_json())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    _Client.reset(dead.conn_id)
    store = S3ArtifactStore("b", aws_conn_id=dead.conn_id)
    try:
        with pytest.raises(ArtifactStoreError, match="could not be reached") as info:
            store.read_bytes("k")
        assert "'aws_dead'" in str(info.value) and "endpoint_url" in (info.value.fix or "")
        assert "testing" not in str(info.value)  # the secret is never shown
    finally:
        _Client.reset(dead.conn_id)


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An undefined connection id and no AWS credentials anywhere boto3 would look."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AIRFLOW_CONN_AWS_UNDEFINED", raising=False)
    _Client.reset("aws_undefined")
    yield "aws_undefined"
    _Client.reset("aws_undefined")


def test_missing_credentials_name_the_connection(no_aws_credentials: str) -> None:
    store = S3ArtifactStore("b", aws_conn_id=no_aws_credentials)
    with pytest.raises(ArtifactStoreError, match="No complete AWS credentials") as info:
        store.exists("k")
    assert "'aws_undefined'" in str(info.value) and "IAM role" in (info.value.fix or "")


# --- read_s3_url ----------------------------------------------------------------------------


def test_read_s3_url_with_size_limit(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="img/a.png", Body=b"p" * 5000)
    url = f"s3://{bucket}/img/a.png"
    assert read_s3_url(url, aws_conn_id=s3.conn_id) == b"p" * 5000
    assert read_s3_url(url, aws_conn_id=s3.conn_id, max_bytes=5000) == b"p" * 5000
    with pytest.raises(ArtifactTooLargeError, match="5000 bytes, above the limit of 4999") as info:
        read_s3_url(url, aws_conn_id=s3.conn_id, max_bytes=4999)
    assert isinstance(info.value, ArtifactStoreError)
    with pytest.raises(ArtifactTooLargeError):
        read_s3_url(url, aws_conn_id=s3.conn_id, max_bytes=0)


def test_read_s3_url_errors(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    with pytest.raises(ArtifactNotFoundError, match=f"s3://{bucket}/img/none.png"):
        read_s3_url(f"s3://{bucket}/img/none.png", aws_conn_id=s3.conn_id)
    with pytest.raises(ArtifactStoreError, match="does not exist"):
        read_s3_url("s3://pml-no-such-bucket/k", aws_conn_id=s3.conn_id)
    for bad in ("http://x/y", "s3:///k", "bucket/key"):
        with pytest.raises(ArtifactStoreError, match="not an S3 URL"):
            read_s3_url(bad, aws_conn_id=s3.conn_id)
    for no_object in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}/folder/"):
        with pytest.raises(ArtifactStoreError, match="names no object"):
            read_s3_url(no_object, aws_conn_id=s3.conn_id)
    with pytest.raises(ArtifactStoreError, match="max_bytes"):
        read_s3_url(f"s3://{bucket}/k", aws_conn_id=s3.conn_id, max_bytes=-1)


def test_read_s3_url_stops_at_the_limit_when_the_length_is_unknown(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response without ContentLength is still cut after max_bytes + 1 bytes."""
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="big", Body=b"b" * 10_000)
    client = _Client.get(s3.conn_id)
    reads: list[int | None] = []

    def get_object(**kwargs: object) -> dict[str, object]:
        response = real_get_object(**kwargs)
        response.pop("ContentLength", None)
        body = response["Body"]
        real_read = body.read

        def read(amt: int | None = None) -> bytes:
            reads.append(amt)
            return real_read(amt)

        body.read = read
        return response

    real_get_object = client.get_object
    monkeypatch.setattr(client, "get_object", get_object)
    with pytest.raises(ArtifactTooLargeError, match="is larger"):
        read_s3_url(f"s3://{bucket}/big", aws_conn_id=s3.conn_id, max_bytes=100)
    assert reads == [101]
