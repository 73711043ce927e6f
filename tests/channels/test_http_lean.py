"""LeanTransport against real loopback servers whose replies each test scripts.

Every request the server reads is numbered from 1 (across connections) and handed with
its connection's writer to the test's handler, which writes what it likes and says
whether to keep the connection open. Waits are on events with deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trustme

from service.channels.http_lean import MAX_HEAD, LeanTransport

Handler = Callable[[int, asyncio.StreamWriter], Awaitable[bool]]
TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def reply(body: bytes = b"ok", status: str = "200 OK", *headers: str) -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Server:
    """HTTP/1.1 on 127.0.0.1:0 (TLS when given a context), replies by ``handler``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.handler: Handler = self.ok
        self.requests: list[bytes] = []  # raw, head and body
        self.connections = 0
        self.disconnected = 0  # connections whose client side ended
        self.release = asyncio.Event()  # lets handlers that ``hold`` answer
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/send"

    async def close(self) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait (2 s at most) until ``check()`` holds."""
        async with asyncio.timeout(2):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    @staticmethod
    async def ok(number: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"ok %d" % number))
        return True

    async def hold(self, number: int, writer: asyncio.StreamWriter) -> bool:
        await self.release.wait()
        return await self.ok(number, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self._changed.set()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.partition(b":")[2])
                self.requests.append(head + await reader.readexactly(length))
                self._changed.set()
                if not await self.handler(len(self.requests), writer):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.disconnected += 1
            self._changed.set()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def make_transport() -> AsyncIterator[Callable[..., LeanTransport]]:
    made: list[LeanTransport] = []

    def make(**options: Any) -> LeanTransport:
        made.append(LeanTransport(**options))
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()


async def post(
    transport: LeanTransport, url: str, body: bytes = b"hello", **timeouts: float
) -> httpx.Response:
    extensions = {"timeout": {**TIMEOUTS, **timeouts}}
    request = httpx.Request("POST", url, content=body, extensions=extensions)
    return await transport.handle_async_request(request)


def sends(*raw: bytes, keep: bool = True) -> Handler:
    """A handler writing ``raw[n - 1]`` for request n, then keeping the connection or not."""

    async def handler(number: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw[number - 1])
        return keep

    return handler


async def test_keep_alive_reuses_one_connection(server: Server, make_transport) -> None:
    """Two requests in a row travel on one TCP connection."""
    transport = make_transport()
    first = await post(transport, server.url)
    second = await post(transport, server.url)
    assert (first.content, second.content) == (b"ok 1", b"ok 2")
    assert server.connections == 1
    assert transport.open_connections == 1


async def test_request_is_serialised_as_given(server: Server, make_transport) -> None:
    """Request line with the raw path, one Host with its port, the headers, the body."""
    transport = make_transport()
    request = httpx.Request(
        "POST",
        server.url + "?a=1%202",
        headers={"User-Agent": "lean-test", "X-Token": "t"},
        content=b"payload",
        extensions={"timeout": TIMEOUTS},
    )
    await transport.handle_async_request(request)
    port = server.url.split(":")[2].split("/")[0]
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /send?a=1%202 HTTP/1.1"
    assert [line for line in lines if line.lower().startswith(b"host:")] == [
        f"Host: 127.0.0.1:{port}".encode()
    ]
    assert {b"User-Agent: lean-test", b"X-Token: t", b"Content-Length: 7"} <= set(lines)
    assert body == b"payload"


async def test_response_is_a_read_httpx_response(server: Server, make_transport) -> None:
    """Status, headers, JSON body, reason and the request are there, already read."""
    server.handler = sends(
        reply(b'{"code": "busy"}', "429 Too Many Requests", "Retry-After: 7"),
        reply(b"", "302 Found", "Location: /elsewhere"),
    )
    transport = make_transport()
    busy = await post(transport, server.url)
    moved = await post(transport, server.url)
    assert busy.json() == {"code": "busy"}
    assert busy.headers.get("Retry-After") == "7"
    assert (busy.is_success, busy.is_redirect, busy.reason_phrase) == (
        False,
        False,
        "Too Many Requests",
    )
    assert busy.request.url == server.url
    assert moved.is_redirect


async def test_requests_beyond_the_limit_wait_for_a_connection(
    server: Server, make_transport
) -> None:
    """With two connections allowed, five requests share two and all complete."""
    server.handler = server.hold
    transport = make_transport(max_connections=2)
    tasks = [asyncio.create_task(post(transport, server.url)) for _ in range(5)]
    await server.until(lambda: len(server.requests) == 2)
    done, _ = await asyncio.wait(tasks, timeout=0.05)
    assert not done and server.connections == 2
    server.release.set()
    responses = await asyncio.gather(*tasks)
    assert all(r.status_code == 200 for r in responses)
    assert server.connections == 2 and len(server.requests) == 5


async def test_waiting_for_a_slot_times_out_as_pool_timeout(server: Server, make_transport) -> None:
    """No connection frees up within the pool timeout: httpx.PoolTimeout."""
    server.handler = server.hold
    transport = make_transport(max_connections=1)
    held = asyncio.create_task(post(transport, server.url))
    await server.until(lambda: len(server.requests) == 1)
    with pytest.raises(httpx.PoolTimeout):
        await post(transport, server.url, pool=0.05)
    server.release.set()
    assert (await held).status_code == 200


async def test_chunked_response_is_reassembled(server: Server, make_transport) -> None:
    """Chunks (with an extension and a trailer) become the body; the connection is reused."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server.handler = sends(chunked, reply())
    transport = make_transport()
    response = await post(transport, server.url)
    await post(transport, server.url)
    assert response.content == b"hello world"
    assert server.connections == 1


async def test_no_content_response_has_no_body(server: Server, make_transport) -> None:
    """A 204 ends at its head and the connection is reused."""
    server.handler = sends(b"HTTP/1.1 204 No Content\r\n\r\n", reply())
    transport = make_transport()
    empty = await post(transport, server.url)
    after = await post(transport, server.url)
    assert (empty.status_code, empty.content, after.content) == (204, b"", b"ok")
    assert server.connections == 1


async def test_connection_close_response_is_not_reused(server: Server, make_transport) -> None:
    """After ``Connection: close`` the next request opens a new connection."""
    server.handler = sends(reply(b"a", "200 OK", "Connection: close"), reply(b"b"))
    transport = make_transport()
    await post(transport, server.url)
    assert transport.open_connections == 0
    assert (await post(transport, server.url)).content == b"b"
    assert server.connections == 2


async def test_http_1_0_response_is_not_reused(server: Server, make_transport) -> None:
    """HTTP/1.0 without keep-alive: the connection is closed after the response."""
    server.handler = sends(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", reply())
    transport = make_transport()
    assert (await post(transport, server.url)).content == b"ok"
    await post(transport, server.url)
    assert server.connections == 2


async def test_body_without_length_runs_to_close(server: Server, make_transport) -> None:
    """No Content-Length, no chunking: the body is all bytes until the server closes."""
    server.handler = sends(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", keep=False)
    transport = make_transport()
    response = await post(transport, server.url)
    assert response.content == b"until the end"
    assert transport.open_connections == 0


async def test_oversized_head_is_refused(server: Server, make_transport) -> None:
    """A response head over 64 KiB is a RemoteProtocolError."""
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\nContent-Length: 0\r\n\r\n"
    server.handler = sends(big)
    transport = make_transport()
    with pytest.raises(httpx.RemoteProtocolError, match="head"):
        await post(transport, server.url)
    assert transport.open_connections == 0


async def test_oversized_body_is_refused(server: Server, make_transport) -> None:
    """A Content-Length over 1 MiB is a RemoteProtocolError, before reading the body."""
    server.handler = sends(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
    transport = make_transport()
    with pytest.raises(httpx.RemoteProtocolError, match="body"):
        await post(transport, server.url)
    assert transport.open_connections == 0


async def test_refused_connection_is_connect_error(make_transport) -> None:
    """Nobody listening: httpx.ConnectError, and the slot is free again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = make_transport(max_connections=1)
    for _ in range(2):  # a leaked slot would make the second a PoolTimeout
        with pytest.raises(httpx.ConnectError):
            await post(transport, f"http://127.0.0.1:{port}/", pool=0.05)


async def test_silent_server_is_read_timeout(server: Server, make_transport) -> None:
    """No answer within the read timeout: httpx.ReadTimeout, and the connection is closed."""
    server.handler = server.hold
    transport = make_transport()
    with pytest.raises(httpx.ReadTimeout):
        await post(transport, server.url, read=0.05)
    assert transport.open_connections == 0


async def test_stalled_tls_handshake_is_connect_timeout(server: Server, make_transport) -> None:
    """A TLS handshake that gets no answer within the connect timeout: httpx.ConnectTimeout."""
    transport = make_transport(max_connections=1)
    for _ in range(2):  # a leaked slot would make the second a PoolTimeout
        with pytest.raises(httpx.ConnectTimeout):
            await post(transport, server.url.replace("http:", "https:"), connect=0.05, pool=0.05)
    assert transport.open_connections == 0


async def test_server_reading_nothing_is_write_timeout(make_transport) -> None:
    """A request body the server never reads stalls the write: httpx.WriteTimeout."""
    stop = asyncio.Event()
    handlers: set[asyncio.Task[Any]] = set()

    async def sit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await stop.wait()
        writer.close()

    sink = await asyncio.start_server(sit, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{sink.sockets[0].getsockname()[1]}/"
    transport = make_transport()
    try:
        with pytest.raises(httpx.WriteTimeout):
            await post(transport, url, b"x" * (16 << 20), write=0.05)
        assert transport.open_connections == 0
    finally:
        stop.set()
        sink.close()
        await asyncio.gather(*handlers)
        await sink.wait_closed()


async def test_idle_connection_closed_by_server_is_replaced(server: Server, make_transport) -> None:
    """The server closes a kept-alive connection while idle; the next request gets a new one."""
    server.handler = sends(reply(b"a"), reply(b"b"), keep=False)
    transport = make_transport()
    await post(transport, server.url)
    await server.until(lambda: server.disconnected == 1)
    await asyncio.sleep(0)  # one loop turn: the client reads the FIN (the retry is not needed)
    assert (await post(transport, server.url)).content == b"b"
    assert server.connections == 2


async def test_reused_connection_dropped_after_the_request_is_not_retried(
    server: Server, make_transport
) -> None:
    """The server reads our second request and hangs up unanswered: an error, sent once."""

    async def drop_the_second(number: int, writer: asyncio.StreamWriter) -> bool:
        if number == 2:
            return False
        return await server.ok(number, writer)

    server.handler = drop_the_second
    transport = make_transport()
    await post(transport, server.url)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        await post(transport, server.url)
    assert len(server.requests) == 2


async def test_new_connection_dropped_without_a_byte_is_not_retried(
    server: Server, make_transport
) -> None:
    """On a fresh connection an unanswered close is an error, the request sent once."""
    server.handler = sends(b"", keep=False)
    transport = make_transport()
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        await post(transport, server.url)
    assert len(server.requests) == 1


async def test_partly_answered_request_is_not_retried(server: Server, make_transport) -> None:
    """Once a byte of the response arrived, a dropped connection is an error, not a retry."""

    async def cut_the_second(number: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply() if number == 1 else b"HTTP/1.1 200 OK\r\n")
        return number == 1

    server.handler = cut_the_second
    transport = make_transport()
    await post(transport, server.url)
    with pytest.raises(httpx.RemoteProtocolError, match="mid-response"):
        await post(transport, server.url)
    assert len(server.requests) == 2


async def test_expired_idle_connection_is_not_reused(server: Server, make_transport) -> None:
    """An idle connection older than keepalive_expiry is closed, not reused."""
    transport = make_transport(keepalive_expiry=0.0)
    await post(transport, server.url)
    await post(transport, server.url)
    assert server.connections == 2
    assert transport.open_connections == 1


async def test_cancelled_request_frees_its_slot(server: Server, make_transport) -> None:
    """Cancelling a request in flight closes its connection; the next one gets the slot."""

    async def hang_the_first(number: int, writer: asyncio.StreamWriter) -> bool:
        if number == 1:
            await server.release.wait()
        return await server.ok(number, writer)

    server.handler = hang_the_first
    transport = make_transport(max_connections=1)
    first = asyncio.create_task(post(transport, server.url))
    await server.until(lambda: len(server.requests) == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert transport.open_connections == 0
    assert (await post(transport, server.url, pool=0.5)).content == b"ok 2"


async def test_cancelled_waiter_leaves_the_queue(server: Server, make_transport) -> None:
    """A request cancelled while queued for a slot does not swallow the freed connection."""
    server.handler = server.hold
    transport = make_transport(max_connections=1)
    held = asyncio.create_task(post(transport, server.url))
    await server.until(lambda: len(server.requests) == 1)
    queued = asyncio.create_task(post(transport, server.url))
    done, _ = await asyncio.wait([queued], timeout=0.05)
    assert not done
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    server.release.set()
    await held
    assert (await post(transport, server.url, pool=0.5)).content == b"ok 2"
    assert server.connections == 1


async def test_streaming_body_is_refused(server: Server, make_transport) -> None:
    """Only bodies given as bytes are sent; a stream is a TypeError, not a half request."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    request = httpx.Request("POST", server.url, content=chunks())
    with pytest.raises(TypeError, match="bytes"):
        await make_transport().handle_async_request(request)
    assert server.connections == 0


async def test_line_break_in_a_header_is_refused(server: Server, make_transport) -> None:
    """CR/LF inside a header value would smuggle headers: httpx.LocalProtocolError."""
    request = httpx.Request("POST", server.url, headers={"X-A": "1\r\nX-B: 2"}, content=b"")
    with pytest.raises(httpx.LocalProtocolError):
        await make_transport().handle_async_request(request)
    assert server.connections == 0


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(tls_ca: trustme.CA) -> AsyncIterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    server = Server(tls=context)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_https_with_a_trusted_certificate(
    tls_server: Server, tls_ca: trustme.CA, make_transport
) -> None:
    """Over TLS (the CA trusted through ssl_context) two requests share one connection."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    transport = make_transport(ssl_context=context)
    await post(transport, tls_server.url)
    assert (await post(transport, tls_server.url)).content == b"ok 2"
    assert tls_server.connections == 1


async def test_https_with_an_untrusted_certificate_is_refused(
    tls_server: Server, make_transport
) -> None:
    """The default context (httpx's verification) refuses a self-signed CA: ConnectError."""
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await post(make_transport(), tls_server.url)
    assert tls_server.requests == []


async def test_aclose_closes_connections_and_refuses_requests(
    server: Server, make_transport
) -> None:
    """aclose drops the kept-alive connection; a later request is a ConnectError."""
    transport = make_transport()
    await post(transport, server.url)
    await transport.aclose()
    assert transport.open_connections == 0
    await server.until(lambda: server.disconnected == 1)
    with pytest.raises(httpx.ConnectError, match="closed"):
        await post(transport, server.url)
