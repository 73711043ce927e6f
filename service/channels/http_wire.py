"""One HTTP/1.1 exchange on one connection, for :mod:`.http_lean`'s pool.

What it speaks, as a client (a subset of RFC 9112):

* requests: ``{method} {raw path} HTTP/1.1``, ``Host`` (httpx.Request adds it), the
  request's headers as given (CR/LF in them is refused), a body given as bytes only;
  no ``Expect: 100-continue``, no pipelining, no HTTP/2, no proxy, no upgrade.
* responses: status line ``HTTP/1.1`` or ``HTTP/1.0`` (interim 1xx skipped); header
  lines ``name: value`` ending in CRLF (no obs-fold), 64 KiB head at most; body framed
  by ``Transfer-Encoding: chunked`` (trailers dropped), ``Content-Length``, or the
  connection closing; none for ``HEAD``/204/304; 1 MiB body at most.
* errors are httpx's: Connect/Read/Write/PoolTimeout per ``request.extensions
  ["timeout"]``, ConnectError (refused, DNS, TLS), ReadError (reset),
  RemoteProtocolError (early EOF, malformed or oversized response).
* no retry once a request was written: a POST is not idempotent, and a gateway that
  read it and then dropped the connection without a word may have sent the SMS. The
  error (transient, "result unknown") goes to the dispatcher, which asks the provider
  before sending again where it can. Only a reused connection found closed *before*
  writing is replaced, once, by a new one: nothing of the request left.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
Key = tuple[str, str, int]
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Stale(httpx.WriteError):
    """A reused connection was closed before anything of the request was written."""


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _over(what: str, limit: int) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"{what} over {limit} bytes")


class Connection(asyncio.Protocol):
    """One socket: buffers what arrives and wakes the request waiting for it."""

    transport: asyncio.Transport

    def __init__(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        self.key = key
        self.buf = bytearray()
        self.eof = False  # the server closed its side, or the connection is gone
        self.error: Exception | None = None
        self.paused = False
        self.received = 0  # bytes of the current response so far
        self.timeouts: dict[str, Any] = {}  # of the current request
        self.idle_since = 0.0
        self._loop = loop
        self._waiter: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.received += len(data)
        if len(self.buf) > 2 * MAX_BODY:  # unread, e.g. a server flooding an idle connection
            self.transport.abort()
        self._wake()

    def eof_received(self) -> None:
        self.eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof, self.error = True, exc
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter, True)

    async def wait(self, kind: str, error: type[httpx.TimeoutException]) -> None:
        """Until data, EOF or writability arrives; ``error`` after the ``kind`` timeout."""
        seconds = self.timeouts.get(kind)
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        timer = None if seconds is None else self._loop.call_later(seconds, _resolve, waiter, False)
        try:
            woke = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if not woke:
            raise error(f"no {kind} progress in {seconds} s")

    async def _more(self) -> None:
        if self.eof:
            if self.error is not None:
                raise httpx.ReadError(str(self.error) or type(self.error).__name__)
            if not self.received:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise httpx.RemoteProtocolError("Server disconnected mid-response.")
        await self.wait("read", httpx.ReadTimeout)

    def _take(self, size: int) -> bytes:
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    async def read_until(self, sep: bytes, limit: int, what: str) -> bytes:
        start = 0
        while (end := self.buf.find(sep, start)) < 0 and len(self.buf) <= limit:
            start = max(0, len(self.buf) - len(sep) + 1)
            await self._more()
        if not 0 <= end <= limit - len(sep):
            raise _over(what, limit)
        return self._take(end + len(sep))

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            await self._more()
        return self._take(size)

    async def read_to_close(self) -> bytes:
        while not self.eof and len(self.buf) <= MAX_BODY:
            await self.wait("read", httpx.ReadTimeout)
        if len(self.buf) > MAX_BODY:
            raise _over("response body", MAX_BODY)
        if self.error is not None:
            await self._more()  # raises ReadError
        return self._take(len(self.buf))


def encode(request: httpx.Request) -> bytes:
    """Request line, headers and body, refusing CR/LF smuggled into a header."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        raise TypeError("LeanTransport sends bodies given as bytes, not streams") from None
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    add_host = "Host" not in request.headers  # httpx.Request normally has it, first
    if add_host:
        parts += (b"Host: ", request.url.netloc, b"\r\n")
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = 2 + add_host + len(raw)  # request line, headers, blank line
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("CR or LF inside a request header")
    return head + body


def _parse_head(
    head: bytes,
) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]], int | None, bool, bool]:
    """(version, status, reason, headers, content length, chunked, keep-alive)."""
    status_line, *lines = head[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {status_line[:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    coding: bytes | None = None
    tokens: set[bytes] = set()
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1:] in b" \t" or line[:1] in b" \t":
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        value = value.strip(b" \t")
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or length not in (None, int(value)):
                raise httpx.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == b"transfer-encoding":
            coding = value.lower()
        elif lower == b"connection":
            tokens.update(token.strip() for token in value.lower().split(b","))
    keep = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    chunked = False
    if coding is not None:  # it overrides Content-Length (and both at once: do not reuse)
        keep = keep and length is None
        chunked = coding.rsplit(b",", 1)[-1].strip() == b"chunked"
        length = None
    return version, int(code), reason, headers, length, chunked, keep


async def _read_chunked(conn: Connection) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await conn.read_until(b"\r\n", 4096, "chunk size line")
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size_text):
            raise httpx.RemoteProtocolError(f"malformed chunk size {size_text[:40]!r}")
        if (size := int(size_text, 16)) == 0:
            break
        if (total := total + size) > MAX_BODY:
            raise _over("response body", MAX_BODY)
        chunk = await conn.read_exactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise httpx.RemoteProtocolError("chunk not followed by CRLF")
        parts.append(chunk[:-2])
    trailers = 0
    while (line := await conn.read_until(b"\r\n", MAX_HEAD, "trailers")) != b"\r\n":
        if (trailers := trailers + len(line)) > MAX_HEAD:
            raise _over("trailers", MAX_HEAD)
    return b"".join(parts)


async def exchange(
    conn: Connection, request: httpx.Request, data: bytes, timeouts: dict[str, Any]
) -> tuple[httpx.Response, bool]:
    """Send, read the whole response; also whether the connection may be reused."""
    conn.received, conn.timeouts = 0, timeouts
    if conn.eof or conn.transport.is_closing():
        raise Stale("connection closed before the request was sent")
    conn.transport.write(data)
    while conn.paused and not conn.eof:
        await conn.wait("write", httpx.WriteTimeout)
    while True:  # interim 1xx responses are skipped
        head = await conn.read_until(b"\r\n\r\n", MAX_HEAD, "response head")
        version, status, reason, headers, length, chunked, keep = _parse_head(head)
        if status == 101:
            raise httpx.RemoteProtocolError("unexpected 101 Switching Protocols")
        if not 100 <= status < 200:
            break
    if request.method == "HEAD" or status in (204, 304):
        body = b""
    elif chunked:
        body = await _read_chunked(conn)
    elif length is not None:
        if length > MAX_BODY:
            raise _over("response body", MAX_BODY)
        body = await conn.read_exactly(length)
    else:
        body, keep = await conn.read_to_close(), False
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(body),  # not content=: that would add a Content-Length
        request=request,
        extensions={"http_version": version, "reason_phrase": reason},
    )
    response.read()
    return response, keep and not conn.eof and not conn.buf
