"""Baseline HTTP servers for the KV benchmark.

`python -m bench.bare --port P` serves one aiohttp handler that returns a small fixed JSON body shaped like
a Consul KV entry. With `--raw` it is instead a minimal asyncio protocol that answers every request with a
fixed response without parsing it; it costs far less than any real server and is used to measure the load
generator's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import cast

from aiohttp import web

BODY = json.dumps(
    [
        {
            "LockIndex": 0,
            "Key": "bench/0",
            "Flags": 0,
            "Value": base64.b64encode(b"v" * 64).decode(),
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }
    ],
    separators=(",", ":"),
).encode()


def use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


async def handle(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


class RawServer(asyncio.Protocol):
    """Replies to each request head (requests carry no body) with a fixed response."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        n = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4 :] if n else data
        if n:
            self.transport.write(self.RESPONSE * n)


async def serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawServer, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--raw", action="store_true", help="minimal protocol server (generator ceiling)")
    args = parser.parse_args()
    use_uvloop()
    if args.raw:
        asyncio.run(serve_raw(args.port))
        return
    app = web.Application()
    app.router.add_get("/", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
