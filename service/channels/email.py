"""Email channel: sends the MIME writer's bytes (:mod:`.mime`) over a pool of SMTP sessions
that aiosmtplib opens and :mod:`.smtp_wire` runs mail transactions on."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from aiosmtplib.email import quote_address

from service.channels.base import (
    ChannelConfigError,
    ChannelName,
    DeliveryError,
    Envelope,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    mask_address,
    mask_text,
    message_id_for,
)
from service.channels.mime import SIMPLE_ADDRESS

# Re-exported: callers written before the split import them from here.
from service.channels.mime import Clock as Clock
from service.channels.mime import build_message as build_message
from service.channels.mime import campaign_key_header as campaign_key_header
from service.channels.mime import message_bytes as message_bytes
from service.channels.mime import utc_now as utc_now
from service.channels.smtp_wire import SmtpWire

log = logging.getLogger(__name__)

Security = Literal["tls", "starttls", "none"]


class Secret:
    """A string that never shows itself in repr/str, even inside dataclasses.asdict."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class SmtpSettings:
    """SMTP connection settings; the password comes from the env var ``password_env``.

    Raises ValueError for inconsistent settings and ChannelConfigError when the
    password variable is missing, so a bad deployment fails at start-up, not on send.
    """

    host: str
    port: int
    security: Security
    from_addr: str
    from_name: str = ""
    message_id_domain: str = ""  # empty: the domain of from_addr
    username: str | None = None
    password_env: str | None = None
    pool_size: int = 2
    timeout: float = 30.0  # seconds: socket inactivity AND the deadline of one attempt
    validate_certs: bool = True
    cert_bundle: str | None = None
    environ: InitVar[Mapping[str, str] | None] = None
    password: Secret | None = field(init=False, repr=False, compare=False)

    def __post_init__(self, environ: Mapping[str, str] | None) -> None:
        if self.security not in ("tls", "starttls", "none"):
            raise ValueError(f"unknown security mode {self.security!r}")
        if self.pool_size < 1 or self.timeout <= 0:
            raise ValueError("pool_size must be >= 1 and timeout > 0")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env must be given together")
        if not self.message_id_domain:
            domain = self.from_addr.rpartition("@")[2]
            if not domain:
                raise ValueError("from_addr has no domain for message_id_domain")
            object.__setattr__(self, "message_id_domain", domain)
        password: Secret | None = None
        if self.password_env is not None:
            value = (os.environ if environ is None else environ).get(self.password_env)
            if not value:
                raise ChannelConfigError(f"SMTP password variable {self.password_env} is not set")
            password = Secret(value)
        object.__setattr__(self, "password", password)


def classify(exc: BaseException) -> DeliveryError:
    """Map an aiosmtplib/OS exception to the DeliveryError tree (stack.md section 3)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return ChannelConfigError(
            f"SMTP authentication failed: {exc.code} {exc.message}", code=str(exc.code)
        )
    if _is_tls_failure(exc):
        return ChannelConfigError(f"SMTP TLS handshake/verification failed: {exc}")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _by_code(exc.code, f"recipient refused: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        refused = exc.recipients[0]
        return _by_code(refused.code, f"recipient refused: {refused.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"SMTP {type(exc).__name__}: {exc.message}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientDeliveryError(f"SMTP connection problem: {exc!r}")
    if isinstance(exc, ValueError | aiosmtplib.SMTPNotSupported):
        return PermanentDeliveryError(f"message cannot be sent: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # e.g. STARTTLS or AUTH configured but not offered by the server.
        return ChannelConfigError(f"SMTP configuration problem: {exc}")
    if isinstance(exc, OSError):
        return TransientDeliveryError(f"SMTP I/O problem: {exc!r}")
    return PermanentDeliveryError(f"unexpected SMTP failure: {exc!r}")


def _by_code(code: int, message: str) -> DeliveryError:
    if 500 <= code <= 599:
        return PermanentDeliveryError(message, code=str(code))
    return TransientDeliveryError(message, code=str(code))


# A pooled session idle longer than this (seconds) is probed with NOOP before it is used.
PROBE_IDLE = 2.0
# NOOP answers meaning "this pooled session is gone": disconnect, or 421 closing.
_STALE_SESSION = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException)
# A peer hanging up mid-handshake is a network event, not a misconfiguration.
_TLS_NETWORK_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _path(address: str) -> bytes:
    """``<address>`` for MAIL FROM / RCPT TO: a plain dot-atom address as it is, anything
    else the way aiosmtplib quotes it (a non-ASCII address fails to encode: refused)."""
    if SIMPLE_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # bounded: cause chains can, in theory, loop
        if seen is None:
            return False
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, _TLS_NETWORK_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Session:
    """One pooled SMTP session: aiosmtplib opens it, a :class:`SmtpWire` runs its mail."""

    __slots__ = ("client", "wire", "size", "last_used")

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.wire: SmtpWire | None = None
        self.size = False  # the server takes MAIL FROM's SIZE= (RFC 1870)
        self.last_used = 0.0  # monotonic time of the last transaction

    @property
    def open(self) -> bool:
        return self.wire is not None and self.wire.usable

    def close(self) -> None:
        if self.wire is not None:
            self.wire.transport.close()
            self.wire = None
        self.client.close()  # also forgets the earlier session's EHLO state


class EmailChannel:
    """Sends one envelope per call over a pool of ``pool_size`` SMTP sessions."""

    name: ChannelName = "email"

    def __init__(self, settings: SmtpSettings, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self._clock = clock
        self._sessions = [_Session(self._new_client()) for _ in range(settings.pool_size)]
        self._idle: asyncio.Queue[_Session] = asyncio.Queue()
        for session in self._sessions:
            self._idle.put_nowait(session)
        self._closed = False
        self._mail_from = b"FROM:" + _path(settings.from_addr)

    def __repr__(self) -> str:
        s = self.settings
        return f"EmailChannel(host={s.host!r}, port={s.port}, security={s.security!r})"

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        # start_tls=False (never None) so a stripped STARTTLS offer cannot downgrade us.
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            validate_certs=s.validate_certs,
            cert_bundle=s.cert_bundle,
            timeout=s.timeout,
            username=s.username,
            password=s.password.reveal() if s.password is not None else None,
        )

    def build_message(self, envelope: Envelope) -> EmailMessage:
        """The message :meth:`send` would send now, parsed (for inspection)."""
        return email.message_from_bytes(self.message_bytes(envelope), policy=email.policy.default)

    def message_bytes(self, envelope: Envelope) -> bytes:
        """The bytes :meth:`send` puts on the wire for ``envelope`` now."""
        s = self.settings
        return message_bytes(
            envelope,
            from_addr=s.from_addr,
            from_name=s.from_name,
            message_id_domain=s.message_id_domain,
            date=self._clock(),
        )

    async def send(self, envelope: Envelope) -> SendResult:
        if self._closed:
            raise TransientDeliveryError("email channel is closed")
        if envelope.channel != "email":
            raise PermanentDeliveryError(f"{envelope.channel} envelope sent to email")
        raw = self.message_bytes(envelope)
        session = await self._idle.get()
        released = False

        def release() -> None:
            # Once this message's content is on its way the session takes the next
            # message's commands behind it (pipelined sessions call this early).
            nonlocal released
            if not released:
                released = True
                self._idle.put_nowait(session)

        try:
            async with asyncio.timeout(self.settings.timeout):
                response = await self._send_on(session, raw, envelope.address, release)
        except BaseException as exc:
            # A refusal in a well-formed reply leaves the session in step (reset); after
            # anything else (disconnect, garbage, timeout, cancellation) start clean.
            if not (isinstance(exc, aiosmtplib.SMTPResponseException) and session.open):
                session.close()
            if not isinstance(exc, Exception):
                raise
            error = classify(exc)
            log.warning(
                "email to %s failed: %s: %s",
                mask_address(envelope.address),
                type(error).__name__,
                mask_text(str(error)),
            )
            if error is exc:
                raise
            raise error from exc
        finally:
            release()
        message_id = message_id_for(envelope.key, self.settings.message_id_domain)
        return SendResult(provider_id=message_id, detail=response)

    async def _open(self, session: _Session) -> SmtpWire:
        """Connect (TLS, STARTTLS, AUTH by aiosmtplib), EHLO, then hand the socket over."""
        session.close()
        client = session.client
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        if client.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("connection closed during the handshake")
        session.size = client.supports_extension("size")
        session.wire = SmtpWire.take_over(
            client.transport, pipelining=client.supports_extension("pipelining")
        )
        return session.wire

    async def _send_on(
        self, session: _Session, raw: bytes, to: str, release: Callable[[], None]
    ) -> str:
        reused = session.open
        idle = session.wire is None or session.wire.busy == 0
        if reused and idle and time.monotonic() - session.last_used > PROBE_IDLE:
            # A session idle for a while may have been dropped by the server (or a NAT)
            # without us noticing yet: probe before the transaction, not during it.
            assert session.wire is not None
            try:
                probe = await session.wire.command(b"NOOP")
                if probe.code != aiosmtplib.SMTPStatus.completed:  # e.g. 421 closing
                    session.close()
            except _STALE_SESSION:
                session.close()
            reused = session.open
        wire = session.wire if reused and session.wire is not None else await self._open(session)
        try:
            return await self._transaction(wire, session.size, raw, to, release)
        except aiosmtplib.SMTPServerDisconnected as exc:
            # A busy session is not probed (a NOOP per message costs a round trip); if
            # the server hung up in between, MAIL FROM finds out. Nothing of the message
            # was sent before DATA, so one retry on a new session cannot duplicate it.
            if not reused or getattr(exc, "stage", "") != "mail":
                raise
            wire = await self._open(session)
            return await self._transaction(wire, session.size, raw, to, release)
        finally:
            session.last_used = time.monotonic()  # a refusal was an answer too

    async def _transaction(
        self, wire: SmtpWire, size: bool, raw: bytes, to: str, release: Callable[[], None]
    ) -> str:
        """MAIL, RCPT, DATA for one recipient, pipelined where the server offers it.

        Pre-rendered 7-bit CRLF bytes go out as they are; the envelope paths are quoted
        here (the sender's once). A refusal resets the envelope (RSET, as ``sendmail``
        does) so the session stays usable. On a pipelined session ``release`` hands the
        session to the next message as soon as this one's content is written (its reply
        still to come). No per-command timeout: :meth:`send` bounds the whole attempt
        (``settings.timeout``).
        """
        rcpt = b"TO:" + _path(to)
        if b"\r" in rcpt or b"\n" in rcpt:
            raise ValueError("recipient contains a line break")
        mail = self._mail_from + (b" SIZE=%d" % len(raw) if size else b"")
        if wire.pipelining:  # the wire resets a refused envelope itself, in order
            # The MIME writer's output is CRLF-only 7-bit (tests/channels: assert_wire_clean).
            return await wire.send_mail(mail, rcpt, raw, crlf=True, on_data_done=release)
        try:
            return await wire.send_mail(mail, rcpt, raw, crlf=True)
        except aiosmtplib.SMTPResponseException:
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await wire.command(b"RSET")
            raise

    async def aclose(self) -> None:
        self._closed = True
        for session in self._sessions:
            if not session.open or session.wire is None or session.wire.busy:
                session.close()
                continue
            try:
                async with asyncio.timeout(self.settings.timeout):
                    await session.wire.command(b"QUIT")
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass  # best effort: the server drops idle sessions anyway
            finally:
                session.close()
