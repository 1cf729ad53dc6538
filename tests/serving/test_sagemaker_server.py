"""The `sagemaker` deploy target against moto's server: model, endpoint config and endpoint
are created with the right shapes, the endpoint answers `ping` through DescribeEndpoint, and
stop or a failed start deletes everything again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patient_ml.serving.client import ping
from patient_ml.serving.errors import ServingError
from patient_ml.serving.sagemaker import SageMakerServer, endpoint_name
from patient_ml.serving.servers import make_server, server_for
from tests.sagemaker_server import ROLE_ARN, SageMakerEmulator, unique


def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"w": [1, 2]}))
    return folder


def gone(call: object, **kwargs: str) -> bool:
    try:
        call(**kwargs)  # type: ignore[operator]
    except Exception as exc:
        return "ValidationException" in str(exc) or "Could not find" in str(exc)
    return False


def test_start_ping_and_stop(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    server = make_server("sagemaker", aws_conn_id=sagemaker.server.conn_id)
    assert isinstance(server, SageMakerServer)
    name = unique("pml-endpoint-brain_mri")
    handle = server.start(name=name, image="123.dkr.ecr.us-east-1.amazonaws.com/clf:1",
                          model_dir=model_dir(tmp_path))  # fmt: skip
    sm_name = endpoint_name(name)
    assert "_" not in sm_name and handle.handle == sm_name
    assert handle.kind == "sagemaker" and handle.url == f"sagemaker://{sm_name}"
    client = sagemaker.client("sagemaker")
    model = client.describe_model(ModelName=sm_name)
    assert model["PrimaryContainer"]["Image"] == "123.dkr.ecr.us-east-1.amazonaws.com/clf:1"
    data_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert data_url == f"s3://{sagemaker.bucket}/sm/models/{sm_name}/model.tar.gz"
    assert model["ExecutionRoleArn"] == ROLE_ARN
    config = client.describe_endpoint_config(EndpointConfigName=sm_name)
    (variant,) = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"]) == (sm_name, "ml.m5.large")
    assert ping(handle.url) and server.is_running(handle.handle)

    server_for("sagemaker").stop(handle.handle)  # as stop_old_endpoints does after a swap
    assert not ping(handle.url) and not server.is_running(handle.handle)
    assert gone(client.describe_endpoint, EndpointName=sm_name)
    assert gone(client.describe_endpoint_config, EndpointConfigName=sm_name)
    assert gone(client.describe_model, ModelName=sm_name)
    listed = sagemaker.client("s3").list_objects_v2(Bucket=sagemaker.bucket, Prefix="sm/models/")
    assert listed.get("KeyCount", 0) == 0


def test_a_failed_endpoint_is_cleaned_up_and_named(
    sagemaker: SageMakerEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sagemaker import models

    original = models.FakeEndpoint.__init__

    def failing(self: object, *args: object, **kwargs: object) -> None:  # failure injection
        original(self, *args, **kwargs)
        self.endpoint_status = "Failed"  # type: ignore[attr-defined]
        self.failure_reason = "The primary container did not pass the ping health check."  # type: ignore[attr-defined]

    monkeypatch.setattr(models.FakeEndpoint, "__init__", failing)
    server = SageMakerServer(aws_conn_id=sagemaker.server.conn_id)
    with pytest.raises(ServingError, match="is Failed: The primary container did not pass"):
        server.start(name="pml-endpoint-x", image="img:1", model_dir=model_dir(tmp_path))
    client = sagemaker.client("sagemaker")
    assert gone(client.describe_endpoint, EndpointName="pml-endpoint-x")
    assert gone(client.describe_model, ModelName="pml-endpoint-x")


def test_predictions_go_through_invoke_endpoint(sagemaker: SageMakerEmulator) -> None:
    """`invoke` of a sagemaker:// URL sends InvokeEndpoint through the AWS connection and
    parses its answer (moto answers from a queue the test fills over its own HTTP API)."""
    import urllib.request

    from patient_ml.serving.client import invoke

    answer = [{"index": 1, "value": "yes", "confidence": 0.9}]
    request = urllib.request.Request(
        f"{sagemaker.server.endpoint_url}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps(
            {
                "region": "us-east-1",
                "results": [{"Body": json.dumps(answer), "ContentType": "application/json"}],
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()
    # moto decodes request bodies as UTF-8, so an ASCII body stands in for the image bytes
    assert invoke("sagemaker://pml-endpoint-y", b"P2 2 1 255 0 255") == answer
