"""Hostile test inputs shared by the fetch and curation tests: real HTTP servers on 127.0.0.1
that count their requests, redirect anywhere, or send one byte at a time."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class HostileServer:
    """A real HTTP server on 127.0.0.1 that serves `body` for every GET and counts requests;
    `/trickle` and `/slow-headers` send one byte at a time."""

    def __init__(self, body: bytes) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                with contextlib.suppress(OSError):  # the client gave up (deadline): expected
                    self.respond()

            def respond(self) -> None:
                if self.path.startswith("/redirect-to/"):
                    self.send_response(302)
                    self.send_header("Location", unquote(self.path.removeprefix("/redirect-to/")))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/slow-headers":
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path == "/trickle":
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
