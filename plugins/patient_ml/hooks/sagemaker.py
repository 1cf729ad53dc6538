"""Amazon SageMaker, S3 and CloudWatch Logs clients through the Amazon provider's hooks.

Credentials, region and endpoint come from one Airflow AWS connection (`aws_conn_id`), as for
the S3 artifact store, so the same code talks to AWS or to a local emulator (the tests use
moto's server). Clients are built once per connection id and shared (boto3 clients are
thread-safe); `reset()` drops them after a connection is redefined in the same process.
"""

from __future__ import annotations

import threading
from typing import Any

from patient_ml.exceptions import PatientMLError

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def _build(service: str, aws_conn_id: str) -> Any:
    if service == "sagemaker":
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=aws_conn_id).get_conn()
    if service == "logs":
        from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

        return AwsLogsHook(aws_conn_id=aws_conn_id).get_conn()
    if service == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=aws_conn_id).get_conn()
    if service == "sagemaker-runtime":
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sagemaker-runtime").get_conn()
    raise ValueError(service)


def client(service: str, aws_conn_id: str) -> Any:
    """A boto3 client of `service` (sagemaker, sagemaker-runtime, s3, logs) for the connection."""
    key = (service, aws_conn_id)
    with _lock:
        found = _clients.get(key)
        if found is None:
            try:
                found = _build(service, aws_conn_id)
            except Exception as exc:
                raise PatientMLError(
                    f"Cannot create a {service} client from Airflow connection {aws_conn_id!r} "
                    f"({type(exc).__name__}: {exc}).",
                    fix="check the AWS connection's credentials, region_name and endpoint_url",
                ) from None
            _clients[key] = found
        return found


def reset(aws_conn_id: str | None = None) -> None:
    with _lock:
        for key in [k for k in _clients if aws_conn_id is None or k[1] == aws_conn_id]:
            del _clients[key]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")
