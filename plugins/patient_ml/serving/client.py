"""HTTP client of the serving contract: `GET /ping` (healthy when 200) and `POST /invocations`
with the raw image bytes (answers JSON). Standard library only; one connection per call."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from patient_ml.serving.errors import ServingError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def content_type_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/octet-stream"


def _request(
    url: str, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ServingError(
            f"Endpoint URL {url!r} is not an http(s) URL.", fix="record a valid endpoint URL"
        )
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES:
            raise ServingError(
                f"{url}{path} answered more than {MAX_RESPONSE_BYTES} bytes.",
                fix="return one prediction per request (see the container contract)",
            )
        return response.status, data
    finally:
        conn.close()


def ping(url: str, timeout: float = 2.0) -> bool:
    if url.startswith("sagemaker://"):  # a SageMaker endpoint: DescribeEndpoint says
        from patient_ml.serving.sagemaker import ping as sagemaker_ping

        return sagemaker_ping(url)
    try:
        status, _ = _request(url, "GET", "/ping", None, {}, timeout)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200


def invoke(
    url: str, data: bytes, timeout: float = 60.0, *, content_type: str | None = None
) -> object:
    """POST one image (or, with `content_type`, another body such as a JSON batch); the parsed
    JSON answer. ServingError names the status and the text."""
    headers = {"Content-Type": content_type or content_type_of(data), "Accept": "application/json"}
    if url.startswith("sagemaker://"):  # InvokeEndpoint through the AWS connection
        from patient_ml.serving.sagemaker import invoke as sagemaker_invoke

        status, body = 200, sagemaker_invoke(url, data, headers["Content-Type"])
    else:
        try:
            status, body = _request(url, "POST", "/invocations", data, headers, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise ServingError(
                f"The model server at {url} did not answer /invocations: "
                f"{type(exc).__name__}: {exc}.",
                fix="check that the endpoint is running (`patient-ml models endpoints`) and "
                "its log",
            ) from None
    text = body[:300].decode("utf-8", errors="replace")
    if status != 200:
        raise ServingError(
            f"The model server at {url} answered /invocations with HTTP {status}: {text}",
            fix="read the server's log; the image may be in a format the model cannot read",
        )
    try:
        return json.loads(body)
    except ValueError:
        raise ServingError(
            f"The model server at {url} answered /invocations with non-JSON text: {text!r}",
            fix="answer JSON as the container contract says",
        ) from None


def wait_healthy(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool],
    log_tail: Callable[[], str],
    what: str,
) -> float:
    """Poll /ping until 200; ServingError with the server's log tail when the server exits or
    the timeout passes. Returns the seconds it took."""
    started = time.monotonic()
    delay = 0.1
    while True:
        if ping(url):
            return time.monotonic() - started
        if not alive():
            raise ServingError(
                f"{what} exited before answering /ping. Its log ends with:\n{log_tail()}",
                fix="fix the model or the image's `serve`; the log above says why it stopped",
            )
        if time.monotonic() - started > timeout:
            raise ServingError(
                f"{what} did not answer /ping within {timeout:.0f} s. Its log ends with:\n"
                f"{log_tail()}",
                fix="make `serve` load faster or raise the health-check timeout",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


MAX_BATCH = 64
"""Images per `{"instances": [...]}` request: the reference containers accept up to 64."""


def invoke_batch(url: str, images: list[bytes], timeout: float = 120.0) -> list[Any]:
    """POST a batch as `{"instances": [<base64 image>, ...]}` (at most MAX_BATCH); the list of
    per-image predictions in their order."""
    if not 0 < len(images) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} images, not {len(images)}")
    body = json.dumps(
        {"instances": [base64.b64encode(data).decode("ascii") for data in images]}
    ).encode()
    answer = invoke(url, body, timeout, content_type="application/json")
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(images):
        got = len(predictions) if isinstance(predictions, list) else "no"
        raise ServingError(
            f"The model server at {url} answered a batch of {len(images)} images with {got} "
            "predictions.",
            fix='answer {"instances": [...]} with {"predictions": [<one per instance>]} (see the '
            "container contract)",
        )
    return predictions


EXPLAIN_ROUTE = "/explanations"
"""The contract's optional route: `POST {"instance": <base64 image>, "index": <label index>}`
answers the container's own saliency map (`{"method", "index", "height", "width", "values"}`)
or 404 when the container offers none."""


def explain(url: str, data: bytes, index: int, timeout: float = 60.0) -> dict[str, Any] | None:
    """The container's own saliency map of `data` for label `index`, or None when it does not
    offer the optional route (404/405/501, or a SageMaker endpoint: only /invocations there)."""
    if url.startswith("sagemaker://"):
        return None
    body = json.dumps(
        {"instance": base64.b64encode(data).decode("ascii"), "index": int(index)}
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    try:
        status, answer = _request(url, "POST", EXPLAIN_ROUTE, body, headers, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise ServingError(
            f"The model server at {url} did not answer {EXPLAIN_ROUTE}: {type(exc).__name__}.",
            fix="check the server's log",
        ) from None
    if status in (404, 405, 501):
        return None
    text = answer[:300].decode("utf-8", errors="replace")
    if status != 200:
        raise ServingError(
            f"The model server at {url} answered {EXPLAIN_ROUTE} with HTTP {status}: {text}",
            fix="fix the container's explanation route, or answer 404 to leave it out",
        )
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ServingError(
            f"The model server at {url} answered {EXPLAIN_ROUTE} with {text!r}, not a JSON object.",
            fix='answer {"method", "index", "height", "width", "values": [[...], ...]}',
        )
    return parsed
