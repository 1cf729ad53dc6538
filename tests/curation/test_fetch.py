"""Attachment fetching: deny-by-default URL rules against real files, a real HTTP server and a
real FHIR server (Binary)."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher, parse_http_url, policy_with
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.exceptions import PatientMLError
from patient_ml.fhir.client import FhirClient
from tests.curation.hostile import HostileServer
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
    for url in ("ftp://host/x.png", "gopher://x", "relative/path.png", "", "Binary/abc", "c:\\x"):
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


# --------------------------------------------------------------------------- hostile input


@pytest.fixture
def two_servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    allowed, disallowed = (
        HostileServer(PAYLOAD),
        HostileServer(b"\x89PNG\r\n\x1a\nFROM-THE-DISALLOWED-PORT"),
    )
    yield allowed, disallowed
    allowed.close()
    disallowed.close()


def ambiguous_urls(allowed: int, disallowed: int) -> list[str]:
    """URLs whose authority a lenient parser reads as 127.0.0.1:<allowed> while another
    connects elsewhere, or that are simply malformed."""
    return [
        f"http://127.0.0.1:{disallowed}\\@127.0.0.1:{allowed}/x.png",  # the reported bypass
        f"http://127.0.0.1:{disallowed}\\\\@127.0.0.1:{allowed}/x.png",
        f"http://127.0.0.1:{allowed}\\x.png",
        f"http://user@127.0.0.1:{allowed}/x.png",
        f"http://127.0.0.1:{allowed}@127.0.0.1:{disallowed}/x.png",
        f"http://127.0.0.1:{allowed}:{disallowed}/x.png",
        f"http://127.0.0.1:{allowed}x/x.png",  # non-numeric port
        "http://127.0.0.1:http/x.png",
        f"http://127.0.0.1:+{allowed}/x.png",
        "http://127.0.0.1:99999/x.png",  # out of range
        "http://127.0.0.1:0/x.png",
        "http://127.0.0.1:/x.png",
        "http://[::1/x.png",  # broken IPv6 literals
        "http://[::1]x/x.png",
        "http://[fe80::1%25eth0]/x.png",
        "http://[127.0.0.1]/x.png",
        f"http://127.0.0.1:{allowed}\x00/x.png",  # NUL and control characters
        f"http://127.0.0.1:{allowed}/x.png\r\nHost: evil",
        f"http://127.0.0.1\t:{allowed}/x.png",
        f"http://127.0.0.1:{allowed}/\u00e9.png",  # non-ASCII
        f"http://0x7f.0.0.1:{allowed}/x.png",  # non-canonical IPv4 spellings
        f"http://127.1:{allowed}/x.png",
        f"http://127.000.000.001:{allowed}/x.png",
        f"http:///127.0.0.1:{allowed}/x.png",
    ]


def test_ambiguous_authorities_are_refused_and_never_connect_elsewhere(
    two_servers: tuple[HostileServer, HostileServer],
) -> None:
    allowed, disallowed = two_servers
    fetcher = ImageFetcher(FetchPolicy(allowed_http_hosts=(f"127.0.0.1:{allowed.port}",)))
    assert fetcher.fetch({"url": f"http://127.0.0.1:{allowed.port}/ok.png"}) == PAYLOAD
    assert fetcher.fetch({"url": f"HTTP://127.0.0.1:{allowed.port}/ok.png#frag"}) == PAYLOAD
    for url in ambiguous_urls(allowed.port, disallowed.port):
        error = quarantined(fetcher, {"url": url})
        assert error.reason in {"url_malformed", "url_not_allowed"}, (url, error.reason)
    assert disallowed.requests == 0
    # A redirect is parsed and checked the same way, hop by hop.
    for location in (
        f"http://127.0.0.1:{disallowed.port}\\@127.0.0.1:{allowed.port}/x.png",
        "http://127.0.0.1:99999/x.png",
        f"http://127.0.0.1:{disallowed.port}/x.png",
        "http://[::1/x.png",
    ):
        url = f"http://127.0.0.1:{allowed.port}/redirect-to/{quote(location, safe='')}"
        error = quarantined(fetcher, {"url": url})
        assert error.reason in {"url_malformed", "url_not_allowed"}, (location, error.reason)
    assert disallowed.requests == 0


def test_ipv6_literals_are_parsed_strictly() -> None:
    target = parse_http_url("https://[0:0::1]:8443/a?b=c")
    assert (target.host, target.port, target.path) == ("::1", 8443, "/a?b=c")
    assert target.url == "https://[::1]:8443/a?b=c"
    assert parse_http_url("http://Example.ORG").url == "http://example.org:80/"
    for allowed in ("[::1]:9", "::1", "[::1]"):
        fetcher = ImageFetcher(FetchPolicy(allowed_http_hosts=(allowed,), deadline=2))
        # allowed, so it is fetched (and nothing listens there): unreachable, not refused
        error = quarantined(fetcher, {"url": "https://[::1]:9/x.png"})
        assert error.reason == "image_unreachable", allowed


def test_hostile_paths_are_quarantined_not_raised(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    os.symlink(allowed / "loop-b", allowed / "loop-a")
    os.symlink(allowed / "loop-a", allowed / "loop-b")
    os.mkfifo(allowed / "fifo.png")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(allowed,), max_bytes=1000))
    expectations = {
        f"file://{allowed}/a%00b.png": "url_malformed",
        f"file://{allowed}/a%0Ab.png": "url_malformed",
        f"file://{allowed}/a%5C..%5Cb.png": "url_malformed",  # backslash
        f"file://{allowed}/%FF%FE.png": "url_malformed",  # not UTF-8
        f"file://{allowed}/{'n' * 300}.png": "image_unreachable",  # ENAMETOOLONG
        f"file://{allowed}/{'d/' * 3000}x.png": "image_unreachable",
        f"file://{allowed}/loop-a": "image_unreachable",  # ELOOP
        f"file://{allowed}/a%20b.png/x": "image_unreachable",  # ENOTDIR
        f"file://{allowed}/fifo.png": "image_not_found",  # refused from its stat, never opened
        "file:/relative.png": "url_malformed",
        "file://[::1/x.png": "url_not_allowed",
        "s3://": "url_malformed",
        "s3://bucket/": "url_malformed",
        "s3://Bad_Bucket/key.png": "url_malformed",
        "s3://bucket/key\x00.png": "url_malformed",
        "unknown:\x00": "url_not_allowed",
    }
    for url, expected in expectations.items():
        started = time.monotonic()
        error = quarantined(fetcher, {"url": url})
        assert error.reason == expected, (url[:80], error.reason, error.detail)
        assert time.monotonic() - started < 2, url[:80]
    detail = quarantined(fetcher, {"url": f"file://{allowed}/fifo.png"}).detail
    assert "FIFO" in detail


def test_unexpected_errors_are_quarantined_with_their_class_only(
    roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure injection: an error nobody foresaw still quarantines the one record."""
    allowed, _ = roots
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(allowed,)))

    def boom(self: ImageFetcher, real: str) -> bytes:
        raise KeyError("Patient/p0001 secret")

    monkeypatch.setattr(ImageFetcher, "_read_regular_file", boom)
    error = quarantined(fetcher, {"url": f"file://{allowed}/a%20b.png"})
    assert (error.reason, error.detail) == ("image_fetch_error", "KeyError")
    assert "p0001" not in str(error)


def test_every_fetch_has_a_total_deadline(two_servers: tuple[HostileServer, HostileServer]) -> None:
    allowed, _ = two_servers
    fetcher = ImageFetcher(
        FetchPolicy(allowed_http_hosts=(f"127.0.0.1:{allowed.port}",), deadline=1.0)
    )
    for path in ("/trickle", "/slow-headers"):  # each byte well within the per-read timeout
        started = time.monotonic()
        error = quarantined(fetcher, {"url": f"http://127.0.0.1:{allowed.port}{path}"})
        assert error.reason == "image_fetch_timeout", path
        assert time.monotonic() - started < 2.5, path


def test_deadline_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FetchPolicy.from_env().deadline == 60
    monkeypatch.setenv("PATIENT_ML_FETCH_DEADLINE_SECONDS", "7.5")
    assert FetchPolicy.from_env().deadline == 7.5
    assert policy_with(FetchPolicy.from_env(), max_bytes=5).deadline == 7.5
    monkeypatch.setenv("PATIENT_ML_FETCH_DEADLINE_SECONDS", "forever")
    with pytest.raises(PatientMLError, match="PATIENT_ML_FETCH_DEADLINE_SECONDS"):
        FetchPolicy.from_env()
