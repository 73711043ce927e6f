"""In-loop aiosmtpd servers on 127.0.0.1:0 that record or refuse mail on purpose."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class RecordingHandler:
    """Accepts every message and queues its raw bytes for the test to inspect."""

    pipelining = False  # offer PIPELINING in EHLO, as real relays do (aiosmtpd does not)

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.data_commands = 0
        self.noop_commands = 0
        self.envelopes: list[tuple[str, list[str], list[str]]] = []  # from, to, MAIL options

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a hook that replaces EHLO
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self.noop_commands += 1
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        status = self.data_status()
        if status is None:
            self.envelopes.append(
                (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options))
            )
            self.messages.put_nowait(envelope.original_content or envelope.content)
            return "250 2.0.0 OK queued"
        return status

    def data_status(self) -> str | None:
        """None accepts; a status line refuses. Subclasses script failures here."""
        return None

    async def next_message(self, deadline: float = 5.0) -> bytes:
        async with asyncio.timeout(deadline):
            return await self.messages.get()


class ScriptedDataHandler(RecordingHandler):
    """Answers DATA with the scripted status lines in turn, then accepts."""

    def __init__(self, *statuses: str) -> None:
        super().__init__()
        self._statuses = list(statuses)

    def data_status(self) -> str | None:
        return self._statuses.pop(0) if self._statuses else None


class RefusingRcptHandler(RecordingHandler):
    """Refuses every recipient with one status line."""

    def __init__(self, status: str) -> None:
        super().__init__()
        self._status = status

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return self._status


class RefusingMailHandler(RecordingHandler):
    """Refuses every sender (MAIL FROM) with one status line; counts RSETs."""

    def __init__(self, status: str) -> None:
        super().__init__()
        self._status = status
        self.resets = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return self._status

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.resets += 1
        return "250 OK"


class StallingRcptHandler(RecordingHandler):
    """Never answers RCPT TO (until released): a server that went silent mid-transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        await self.release.wait()
        return "250 OK"


class DroppingHandler(RecordingHandler):
    """Hangs up after receiving the message body, before answering it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        server.transport.abort()
        return "250 2.0.0 never seen by the client"


def password_authenticator(login: bytes, password: bytes) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator that accepts exactly one login/password pair."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == (login, password)
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 535

    return authenticate


@dataclass
class RunningServer:
    host: str
    port: int
    handler: RecordingHandler
    connections: int = 0
    sessions: list[SMTP] = field(default_factory=list)

    def hang_up_all(self) -> None:
        """Close every server-side session, as an idle timeout on a real relay would."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()


@asynccontextmanager
async def running_server(
    handler: RecordingHandler,
    *,
    starttls_context: ssl.SSLContext | None = None,
    implicit_tls_context: ssl.SSLContext | None = None,
    authenticator: Callable[..., AuthResult] | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``handler`` in the running loop (Controller(port=0) fails in 1.4.6)."""
    loop = asyncio.get_running_loop()
    state = RunningServer("127.0.0.1", 0, handler)

    def factory() -> SMTP:
        state.connections += 1
        session = SMTP(
            handler,
            hostname="localhost",  # the default runs a blocking getfqdn() per session
            tls_context=starttls_context,
            require_starttls=starttls_context is not None,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            loop=loop,
        )
        state.sessions.append(session)
        return session

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit_tls_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        state.hang_up_all()
        await server.wait_closed()
