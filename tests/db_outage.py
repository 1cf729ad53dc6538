"""A TCP proxy in front of PostgreSQL that can go down: every open connection is cut and new
ones are refused for a while, as during a server restart or a failover. Tests point an engine
at `proxy.url` and call `proxy.outage(seconds)` to inject the fault on the real server."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

from sqlalchemy.engine import make_url


class OutageProxy:
    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        self._target = (url.host or "127.0.0.1", url.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        self._down_until = 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.cut = 0  # connections cut by outages
        self.refused = 0  # connections refused during outages
        threading.Thread(target=self._accept, daemon=True, name="outage-proxy").start()

    def outage(self, seconds: float) -> None:
        """From now on for `seconds`: every open connection is cut, new ones are refused."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            victims, self._open = self._open, set()
        for sock in victims:
            self.cut += 1
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.outage(0)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65_536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._open.difference_update((a, b))


@contextlib.contextmanager
def outage_proxy(server_url: str) -> Iterator[OutageProxy]:
    proxy = OutageProxy(server_url)
    try:
        yield proxy
    finally:
        proxy.close()
