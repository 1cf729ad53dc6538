"""A byte relay between two sockets, for docker-compose.local.yaml: lets the containers of the
compose stack reach the PostgreSQL and Redis of a machine that cannot pull their images and
whose servers listen on 127.0.0.1 only. Standard library only (runs on the base image).

    python3 relay.py LISTEN TARGET      # each tcp:HOST:PORT or unix:/path
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys


def _parse(spec: str) -> tuple[str, str, int]:
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return kind, rest, 0
    host, _, port = rest.rpartition(":")
    if kind == "tcp" and host and port.isdigit():
        return kind, host, int(port)
    sys.exit(f"relay: {spec!r} is neither tcp:HOST:PORT nor unix:/path")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main(listen: str, target: str) -> None:
    lkind, lhost, lport = _parse(listen)
    tkind, thost, tport = _parse(target)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if tkind == "unix":
                treader, twriter = await asyncio.open_unix_connection(thost)
            else:
                treader, twriter = await asyncio.open_connection(thost, tport)
        except OSError as exc:
            print(f"relay: {target} unreachable: {exc}", flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, twriter), _pipe(treader, writer))

    if lkind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lhost)
        server = await asyncio.start_unix_server(handle, lhost)
        os.chmod(lhost, 0o666)
    else:
        server = await asyncio.start_server(handle, lhost, lport)
    print(f"relay: {listen} -> {target}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
