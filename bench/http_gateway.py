"""A minimal SMS gateway for the benchmarks, meant to run in its own process.

``python -m bench.http_gateway`` listens on 127.0.0.1 (a free port, printed as the first
line of stdout) and answers every HTTP/1.1 request with ``200`` and a small JSON body,
keeping connections alive. Deliberately tiny: the gateway must not be the bottleneck.
"""

from __future__ import annotations

import asyncio
import itertools
import signal

_ids = itertools.count(1)


class GatewayProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                value = head[at + 17 : line_end if line_end >= 0 else len(head)]
                length = int(value.strip())
            total = end + 4 + length
            if len(self._buf) < total:
                return
            self._buf = self._buf[total:]
            body = b'{"code":"OK","data":{"id":"gw-%d"}}' % next(_ids)
            assert self._transport is not None
            self._transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(GatewayProtocol, host="127.0.0.1", port=0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve())
