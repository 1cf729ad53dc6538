"""Attachment fetching: deny-by-default URL rules against real files, a real HTTP server and a
real FHIR server (Binary)."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher, policy_with
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.fhir.client import FhirClient
from tests.fhir_server import FhirServer

PAYLOAD = b"\x89PNG\r\n\x1a\n" + b"x" * 100


def quarantined(fetcher: ImageFetcher, attachment: dict) -> QuarantineError:
    with pytest.raises(QuarantineError) as info:
        fetcher.fetch(attachment)
    return info.value


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "a b.png").write_bytes(PAYLOAD)
    (outside / "secret.png").write_bytes(PAYLOAD)
    os.symlink(outside / "secret.png", allowed / "link.png")
    (allowed / "big.png").write_bytes(b"y" * 2000)
    return allowed, outside


def test_inline_data(tmp_path: Path) -> None:
    fetcher = ImageFetcher(FetchPolicy(max_bytes=1000))
    assert fetcher.fetch({"data": base64.b64encode(PAYLOAD).decode()}) == PAYLOAD
    assert quarantined(fetcher, {"data": "not base64 !!"}).reason == "invalid_inline_data"
    big = base64.b64encode(b"z" * 3000).decode()
    assert quarantined(fetcher, {"data": big}).reason == "image_too_large"


def test_file_urls_only_under_allowed_roots(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(allowed,), max_bytes=1000))
    assert fetcher.fetch({"url": f"file://{allowed}/a%20b.png"}) == PAYLOAD
    assert fetcher.fetch({"url": f"file://localhost{allowed}/a%20b.png"}) == PAYLOAD
    for url in (
        f"file://{outside}/secret.png",
        f"file://{allowed}/../outside/secret.png",
        f"file://{allowed}/link.png",  # a symlink pointing outside
        f"file://{allowed}x/a.png",  # a sibling whose name starts like the root
    ):
        assert quarantined(fetcher, {"url": url}).reason == "path_outside_allowed_roots", url
    assert quarantined(fetcher, {"url": f"file://otherhost{allowed}/a.png"}).reason == (
        "url_not_allowed"
    )
    assert quarantined(fetcher, {"url": f"file://{allowed}/nope.png"}).reason == "image_not_found"
    assert quarantined(fetcher, {"url": f"file://{allowed}"}).reason == "image_not_found"
    assert quarantined(fetcher, {"url": f"file://{allowed}/big.png"}).reason == "image_too_large"


def test_no_roots_configured_refuses_every_file(roots: tuple[Path, Path]) -> None:
    error = quarantined(ImageFetcher(FetchPolicy()), {"url": f"file://{roots[0]}/a%20b.png"})
    assert error.reason == "path_outside_allowed_roots"
    assert "no allowed roots configured" in error.detail


def test_unknown_schemes_are_refused() -> None:
    fetcher = ImageFetcher(FetchPolicy())
    for url in ("ftp://host/x.png", "gopher://x", "relative/path.png", "", "Binary/abc"):
        assert quarantined(fetcher, {"url": url}).reason == "url_not_allowed", url


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if headers.get("Transfer-Encoding") == "chunked":
            for start in range(0, len(body), 500):
                piece = body[start : start + 500]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_allow_list_redirects_and_errors(http_server: str) -> None:
    base = f"http://{http_server}"
    _Handler.routes = {
        "/ok.png": (200, {}, PAYLOAD),
        "/hop": (302, {"Location": "/ok.png"}, b""),
        "/away": (302, {"Location": "http://evil.example/x.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/broken": (500, {}, b"oops"),
        "/gone": (410, {}, b""),
        "/declared-big": (200, {"Content-Length": "5000"}, b"y" * 5000),
        "/chunked-big": (200, {"Transfer-Encoding": "chunked"}, b"y" * 5000),
    }
    fetcher = ImageFetcher(FetchPolicy(allowed_http_hosts=(http_server,), max_bytes=1000))
    assert fetcher.fetch({"url": f"{base}/ok.png"}) == PAYLOAD
    assert fetcher.fetch({"url": f"{base}/hop"}) == PAYLOAD
    expectations = {
        "/away": "url_not_allowed",
        "/loop": "image_unreachable",
        "/broken": "image_unreachable",
        "/gone": "image_not_found",
        "/missing": "image_not_found",
        "/declared-big": "image_too_large",
        "/chunked-big": "image_too_large",
    }
    for path, expected in expectations.items():
        assert quarantined(fetcher, {"url": f"{base}{path}"}).reason == expected, path
    host_only = ImageFetcher(FetchPolicy(allowed_http_hosts=("127.0.0.1",)))
    assert host_only.fetch({"url": f"{base}/ok.png"}) == PAYLOAD
    other = ImageFetcher(FetchPolicy(allowed_http_hosts=("example.org",)))
    assert quarantined(other, {"url": f"{base}/ok.png"}).reason == "url_not_allowed"


def test_unreachable_host_is_quarantined() -> None:
    fetcher = ImageFetcher(FetchPolicy(allowed_http_hosts=("127.0.0.1:9",), http_timeout=2))
    assert quarantined(fetcher, {"url": "http://127.0.0.1:9/x.png"}).reason == "image_unreachable"


def test_fhir_binary_relative_and_absolute(fhir_server: FhirServer) -> None:
    client = FhirClient(fhir_server.base_url)
    binary = client.create(
        {
            "resourceType": "Binary",
            "contentType": "image/png",
            "data": base64.b64encode(PAYLOAD).decode(),
        }
    )
    fetcher = ImageFetcher(FetchPolicy(max_bytes=1000), fhir_client=client)
    assert fetcher.fetch({"url": f"Binary/{binary['id']}"}) == PAYLOAD
    assert fetcher.fetch({"url": client.url(f"Binary/{binary['id']}")}) == PAYLOAD
    assert quarantined(fetcher, {"url": "Binary/does-not-exist"}).reason == "image_not_found"
    small = ImageFetcher(FetchPolicy(max_bytes=10), fhir_client=client)
    assert quarantined(small, {"url": f"Binary/{binary['id']}"}).reason == "image_too_large"


def test_policy_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", f"{tmp_path}{os.pathsep}/data")
    monkeypatch.setenv("PATIENT_ML_ALLOWED_HTTP_HOSTS", " Images.Example:8443 , pacs ")
    policy = FetchPolicy.from_env()
    assert policy.allowed_file_roots == (tmp_path, Path("/data"))
    assert policy.allowed_http_hosts == ("images.example:8443", "pacs")
    merged = policy_with(policy, allowed_http_hosts=["x"], max_bytes=5)
    assert merged.allowed_file_roots == policy.allowed_file_roots
    assert (merged.allowed_http_hosts, merged.max_bytes) == (("x",), 5)
