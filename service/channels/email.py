"""Email channel: builds RFC 5322 messages and sends them over an aiosmtplib pool."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from email import encoders
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.mime.base import MIMEBase
from typing import Literal, cast

import aiosmtplib

from service.channels.base import (
    Attachment,
    ChannelConfigError,
    ChannelName,
    DeliveryError,
    Envelope,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    mask_address,
    message_id_for,
)

log = logging.getLogger(__name__)

Security = Literal["tls", "starttls", "none"]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


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
                raise ChannelConfigError(
                    f"SMTP password variable {self.password_env} is not set"
                )
            password = Secret(value)
        object.__setattr__(self, "password", password)


def build_message(
    envelope: Envelope,
    *,
    from_addr: str,
    from_name: str,
    message_id_domain: str,
    date: datetime,
) -> EmailMessage:
    """The exact message the email channel sends (flatten with ``policy.SMTP``).

    Raises PermanentDeliveryError for content no retry can fix (bad address, CR/LF in a
    header, naive date).
    """
    if date.tzinfo is None:
        raise PermanentDeliveryError("message date must be timezone-aware")
    try:
        msg = EmailMessage()
        msg["Subject"] = envelope.subject
        msg["From"] = Address(display_name=from_name, addr_spec=from_addr)
        msg["To"] = Address(
            display_name=envelope.recipient_name, addr_spec=envelope.address
        )
        msg["Date"] = email.utils.format_datetime(date)
        msg["Message-ID"] = message_id_for(envelope.key, message_id_domain)
        msg["X-Campaign-Key"] = envelope.key
        # base64 keeps the body 7-bit clean for relays without 8BITMIME.
        msg.set_content(envelope.text, cte="base64")
        if envelope.html is not None:
            msg.add_alternative(envelope.html, subtype="html", cte="base64")
        if envelope.attachments:
            msg.make_mixed()
            for attachment in envelope.attachments:
                # typeshed narrows attach() to EmailMessage; any Message part works.
                msg.attach(cast(EmailMessage, _attachment_part(attachment)))
    except ValueError as exc:  # email's header defects are ValueErrors too
        raise PermanentDeliveryError(f"cannot build email: {exc}") from exc
    return msg


def _attachment_part(attachment: Attachment) -> MIMEBase:
    maintype, _, subtype = attachment.mime_type.partition("/")
    if not maintype or not subtype:
        maintype, subtype = "application", "octet-stream"
    # compat32 part: the modern policy would rewrite an RFC 2047 ``name=`` as RFC 2231,
    # which QQ Mail and Outlook POP/IMAP fail to display.
    part = MIMEBase(maintype, subtype)
    part.set_payload(attachment.content)
    encoders.encode_base64(part)
    name = attachment.filename
    if name.isascii():
        part.add_header("Content-Disposition", "attachment", filename=name)
        part.set_param("name", name)
        return part
    part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
    # Pre-folded so every line stays under 78 chars and the generator keeps it verbatim.
    words = Header(name, "utf-8").encode(maxlinelen=68)
    part.replace_header("Content-Type", f'{maintype}/{subtype};\n name="{words}"')
    return part


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


# NOOP answers meaning "this pooled session is gone": disconnect, or 421 closing.
_STALE_SESSION = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException)
# A peer hanging up mid-handshake is a network event, not a misconfiguration.
_TLS_NETWORK_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


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


class EmailChannel:
    """Sends one envelope per call over a pool of ``pool_size`` SMTP connections."""

    name: ChannelName = "email"

    def __init__(self, settings: SmtpSettings, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self._clock = clock
        self._clients = [self._new_client() for _ in range(settings.pool_size)]
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)
        self._closed = False

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
        s = self.settings
        return build_message(
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
        msg = self.build_message(envelope)
        client = await self._idle.get()
        try:
            async with asyncio.timeout(self.settings.timeout):
                response = await self._send_on(client, msg, envelope.address)
        except BaseException as exc:
            # Unknown protocol state after any failure or cancellation: start clean.
            client.close()
            if not isinstance(exc, Exception):
                raise
            error = classify(exc)
            log.warning("email to %s failed: %r", mask_address(envelope.address), error)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._idle.put_nowait(client)
        return SendResult(provider_id=str(msg["Message-ID"]), detail=response)

    async def _send_on(
        self, client: aiosmtplib.SMTP, msg: EmailMessage, to: str
    ) -> str:
        if client.is_connected:
            # An idle session may have been dropped by the server without us noticing
            # yet; probing before the transaction keeps the reconnect duplicate-free.
            try:
                await client.noop()
            except _STALE_SESSION:
                client.close()
        if not client.is_connected:
            await client.connect()
        errors, response = await client.send_message(
            msg, sender=self.settings.from_addr, recipients=[to]
        )
        if errors:  # a partial refusal does not raise
            refused = next(iter(errors.values()))
            raise _by_code(refused.code, f"recipient refused: {refused.message}")
        return response

    async def aclose(self) -> None:
        self._closed = True
        for client in self._clients:
            if not client.is_connected:
                continue
            try:
                async with asyncio.timeout(self.settings.timeout):
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # best effort: the server drops idle sessions anyway
            finally:
                client.close()
