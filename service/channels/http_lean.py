"""A lean HTTP/1.1 keep-alive transport for the SMS gateways (an ``httpx`` transport).

Why it exists: at ~1,000 SMS/s (bench figure 2) the service spent ~0.93 ms of CPU per
SMS inside ``httpx.AsyncHTTPTransport`` (httpcore): the pool's
``_assign_requests_to_connections`` asks every idle connection ``has_expired``, which
polls its socket (a syscall per idle socket per request, 17 %); h11's state machine
sending and parsing headers (~20 %); ``Response.aread``/``aclose`` through the pool's
stream wrappers (20 %). A gateway call is one small POST and one small reply on a kept-
alive connection, so :class:`LeanTransport` does just that on an asyncio ``Protocol``
and returns an ``httpx.Response`` that is already read (content decoding is httpx's):
callers and ``sms_common.error_for_transport`` see the same types as before. With it
the SMS cycle's CPU went from 1.89 to ~0.8 ms per message.

The wire (requests, responses, errors) is :mod:`.http_wire`; this module is the pool:

* connections: at most ``max_connections`` in all, idle ones kept per (scheme, host,
  port) and reused last-in first-out unless the server said ``Connection: close`` (or
  spoke HTTP/1.0 without keep-alive), the body ran to close, or they idled
  ``keepalive_expiry`` seconds (``time.monotonic`` on reuse, no syscall). Requests
  beyond the limit queue first-in first-out. A failed, timed-out or cancelled exchange
  closes its connection; ``aclose`` closes them all and refuses later requests.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any

import httpx

from .http_wire import MAX_BODY, MAX_HEAD, Connection, Key, Stale, encode, exchange

__all__ = ["MAX_BODY", "MAX_HEAD", "LeanTransport"]
_PORTS = {"http": 80, "https": 443}


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections, ``max_connections`` in all, for every origin."""

    def __init__(
        self,
        *,
        max_connections: int = 10,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Key, list[Connection]] = {}  # oldest first
        self._slots = 0  # connections open or being opened
        self._waiters: deque[tuple[Key, asyncio.Future[Connection | None]]] = deque()
        self._conns: set[Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections currently open, in use or idle."""
        return len(self._conns)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        data = encode(request)
        url = request.url
        if url.scheme not in _PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (url.scheme, url.raw_host.decode("ascii"), url.port or _PORTS[url.scheme])
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        conn = await self._acquire(key, timeouts)
        retried = False
        while True:
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect(key, timeouts)
                response, keep = await exchange(conn, request, data, timeouts)
                break
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                assert conn is not None  # _connect raises only ConnectError/ConnectTimeout
                stale = reused and not retried and isinstance(exc, Stale)
                self._close(conn)
                if not stale:
                    self._release_slot()
                    raise
                conn, retried = None, True  # keep the slot, open a new connection
            except BaseException:  # timeouts, cancellation, anything else
                if conn is not None:
                    self._close(conn)
                self._release_slot()
                raise
        self._release(conn, keep)
        return response

    async def _acquire(self, key: Key, timeouts: dict[str, Any]) -> Connection | None:
        """An idle connection to ``key``, or ``None``: a slot is reserved for a new one."""
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        idle = self._idle.get(key)
        if idle:
            stale_before = time.monotonic() - self._expiry
            while idle and idle[0].idle_since < stale_before:
                self._close(idle.pop(0))
                self._release_slot()
            while idle:
                conn = idle.pop()
                if not (conn.eof or conn.buf):
                    return conn
                self._close(conn)
                self._release_slot()
        if self._slots < self._max:
            self._slots += 1
            return None
        for other in self._idle.values():
            if other:  # evict another origin's oldest idle connection, take its slot
                self._close(other.pop(0))
                return None
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()  # handed over just as we gave up: pass it on
                if given is None:
                    self._release_slot()
                else:
                    self._release(given, True)
            elif entry in self._waiters:
                self._waiters.remove(entry)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no free connection in time") from None
            raise

    async def _connect(self, key: Key, timeouts: dict[str, Any]) -> Connection:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        scheme, host, port = key
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, key),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._conns.add(conn)
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()  # what AsyncHTTPTransport uses
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    def _release(self, conn: Connection, keep: bool) -> None:
        """Hand a finished connection to the first waiter, park it idle, or close it."""
        if not keep or self._closed:
            self._close(conn)
            self._release_slot()
            return
        while self._waiters:
            key, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if key == conn.key:
                waiter.set_result(conn)
            else:
                self._close(conn)
                waiter.set_result(None)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def _release_slot(self) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._slots -= 1

    def _close(self, conn: Connection) -> None:
        self._conns.discard(conn)
        conn.transport.abort()

    async def aclose(self) -> None:
        """Close every connection; later requests fail with ``httpx.ConnectError``."""
        self._closed = True
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(httpx.ConnectError("the transport was closed"))
        self._waiters.clear()
        self._idle.clear()
        for conn in list(self._conns):
            self._close(conn)
        await asyncio.sleep(0)  # let the transports finish closing their sockets
