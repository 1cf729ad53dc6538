"""Serve a model on an Amazon SageMaker endpoint (the `sagemaker` deploy target).

`start` packs the model folder into `model.tar.gz` at
`<PATIENT_ML_SAGEMAKER_S3_URI>/models/<name>/model.tar.gz`, then creates a Model (the inference
image's `serve`, `ModelDataUrl`, the execution role, no network), an EndpointConfig (one
variant on PATIENT_ML_SAGEMAKER_SERVE_INSTANCE_TYPE) and an Endpoint, all named after the
endpoint, and waits until the endpoint is `InService`. A `Failed` endpoint (its FailureReason)
or one not in service within PATIENT_ML_SAGEMAKER_ENDPOINT_TIMEOUT_SECONDS is deleted again
(endpoint, config, model, model.tar.gz) and the deploy fails, so the champion keeps serving.
`stop` (an older endpoint after a new champion, or a rollback) deletes the same four things.

The recorded URL is `sagemaker://<endpoint name>`: `patient_ml.serving.client` answers `ping`
with DescribeEndpoint (healthy while InService) and sends predictions with InvokeEndpoint.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patient_ml.serving.base import ModelServer, ServeLimits, ServerHandle
from patient_ml.serving.errors import ServingError
from patient_ml.training.backends.sagemaker import SageMakerSettings

SCHEME = "sagemaker://"
NAME_LIMIT = 63
LIVE = {"Creating", "Updating", "SystemUpdating", "InService"}


def endpoint_name(name: str) -> str:
    """SageMaker's rule for endpoint, config and model names: [a-zA-Z0-9-], 63 characters."""
    return re.sub(r"[^a-zA-Z0-9-]", "-", name).strip("-")[:NAME_LIMIT].rstrip("-") or "pml"


def endpoint_url(name: str) -> str:
    return f"{SCHEME}{name}"


def model_request(name: str, image: str, model_uri: str, settings: SageMakerSettings) -> dict:
    return {
        "ModelName": name,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": model_uri, "Mode": "SingleModel"},
        "ExecutionRoleArn": settings.role_arn,
        "EnableNetworkIsolation": True,
        "Tags": [{"Key": "patient-ml.endpoint", "Value": name}],
    }


def endpoint_config_request(name: str, settings: SageMakerSettings) -> dict:
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": settings.serve_instance_type,
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": [{"Key": "patient-ml.endpoint", "Value": name}],
    }


class SageMakerServer(ModelServer):
    kind = "sagemaker"

    def __init__(
        self,
        limits: ServeLimits | None = None,
        settings: SageMakerSettings | None = None,
        aws_conn_id: str | None = None,
    ) -> None:
        super().__init__(limits)
        self.settings = settings or SageMakerSettings.from_env(aws_conn_id)

    def _client(self, service: str) -> Any:
        from patient_ml.hooks.sagemaker import client

        return client(service, self.settings.aws_conn_id)

    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle:
        """`labels` are not used here: an evaluation endpoint left by a dead task is found by
        its name (the retry deletes it first); the run's end does not look for it."""
        from patient_ml.training.backends.sagemaker import _aws_error
        from patient_ml.training.tuning import pack_model

        sm_name = endpoint_name(name)
        self.stop(sm_name)  # a leftover of a crashed attempt with the same name
        key = self.settings.key("models", sm_name, "model.tar.gz")
        sagemaker = self._client("sagemaker")
        try:
            with tempfile.TemporaryDirectory(prefix="pml-sm-") as tmp:
                packed = Path(tmp) / "model.tar.gz"
                pack_model(Path(model_dir), packed)
                self._client("s3").upload_file(str(packed), self.settings.bucket, key)
            model_uri = f"s3://{self.settings.bucket}/{key}"
            sagemaker.create_model(**model_request(sm_name, image, model_uri, self.settings))
            sagemaker.create_endpoint_config(**endpoint_config_request(sm_name, self.settings))
            sagemaker.create_endpoint(
                EndpointName=sm_name,
                EndpointConfigName=sm_name,
                Tags=[{"Key": "patient-ml.endpoint", "Value": sm_name}],
            )
        except Exception as exc:
            self.stop(sm_name)
            error = _aws_error(exc, f"creating endpoint {sm_name}")
            raise ServingError(error.message, fix=error.fix) from None
        try:
            self._wait_in_service(sm_name, image)
        except BaseException:
            self.stop(sm_name)
            raise
        return ServerHandle("sagemaker", sm_name, endpoint_url(sm_name), sm_name)

    def _wait_in_service(self, sm_name: str, image: str) -> None:
        timeout = max(self.limits.health_timeout, self.settings.endpoint_timeout_seconds)
        deadline = time.monotonic() + timeout
        while True:
            described = self._client("sagemaker").describe_endpoint(EndpointName=sm_name)
            status = described.get("EndpointStatus")
            if status == "InService":
                return
            if status not in LIVE:
                raise ServingError(
                    f"SageMaker endpoint {sm_name} ({image}) is {status}: "
                    f"{described.get('FailureReason') or 'no FailureReason'}",
                    fix="read the endpoint's CloudWatch log (/aws/sagemaker/Endpoints/"
                    f"{sm_name}); the image's `serve` must answer GET /ping on port 8080",
                )
            if time.monotonic() > deadline:
                raise ServingError(
                    f"SageMaker endpoint {sm_name} ({image}) was still {status} after "
                    f"{timeout:.0f} s.",
                    fix="raise PATIENT_ML_SAGEMAKER_ENDPOINT_TIMEOUT_SECONDS or check the "
                    "endpoint's CloudWatch log",
                )
            time.sleep(self.settings.poll_seconds)

    def status(self, handle: str) -> str | None:
        from patient_ml.hooks.sagemaker import error_code

        try:
            described = self._client("sagemaker").describe_endpoint(EndpointName=handle)
        except Exception as exc:
            if error_code(exc) == "ValidationException":  # no such endpoint
                return None
            raise
        return str(described.get("EndpointStatus"))

    def is_running(self, handle: str) -> bool:
        return self.status(handle) in LIVE

    def image_digest(self, image: str) -> str:
        return image  # SageMaker pulls it from ECR; an `@sha256:` reference pins it

    def stop(self, handle: str) -> None:
        """Delete the endpoint, its config, its model and the uploaded model.tar.gz (each may
        already be gone)."""
        sagemaker = self._client("sagemaker")
        for call, kwargs in (
            (sagemaker.delete_endpoint, {"EndpointName": handle}),
            (sagemaker.delete_endpoint_config, {"EndpointConfigName": handle}),
            (sagemaker.delete_model, {"ModelName": handle}),
        ):
            with contextlib.suppress(Exception):  # not found: already deleted
                call(**kwargs)
        with contextlib.suppress(Exception):
            self._client("s3").delete_object(
                Bucket=self.settings.bucket, Key=self.settings.key("models", handle, "model.tar.gz")
            )


def ping(url: str) -> bool:
    """Healthy while the endpoint is InService (DescribeEndpoint)."""
    try:
        return SageMakerServer().status(url.removeprefix(SCHEME)) == "InService"
    except Exception:
        return False


def invoke(url: str, data: bytes, content_type: str) -> bytes:
    name = url.removeprefix(SCHEME)
    settings = SageMakerSettings.from_env()
    from patient_ml.hooks.sagemaker import client

    try:
        answer = client("sagemaker-runtime", settings.aws_conn_id).invoke_endpoint(
            EndpointName=name, Body=data, ContentType=content_type, Accept="application/json"
        )
    except Exception as exc:
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message")
        raise ServingError(
            f"SageMaker endpoint {name} did not answer InvokeEndpoint: "
            f"{message or f'{type(exc).__name__}: {exc}'}",
            fix="check the endpoint (`patient-ml models endpoints`) and its CloudWatch log",
        ) from None
    return bytes(answer["Body"].read())
