"""Email channel: builds RFC 5322 messages and sends them over an aiosmtplib pool."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email
import email.policy
import email.utils
import functools
import logging
import os
import random
import re
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Literal

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
    mask_text,
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
                raise ChannelConfigError(f"SMTP password variable {self.password_env} is not set")
            password = Secret(value)
        object.__setattr__(self, "password", password)


def message_bytes(
    envelope: Envelope,
    *,
    from_addr: str,
    from_name: str,
    message_id_domain: str,
    date: datetime,
) -> bytes:
    """The exact bytes the email channel sends and the file outbox writes.

    A 7-bit MIME message with CRLF line ends and lines of at most 78 characters:
    Subject/From/To/Date/Message-ID/X-Campaign-Key/MIME-Version, a base64 UTF-8 text
    part (plus an HTML alternative, inside multipart/mixed when there are attachments).
    Written directly instead of through ``email.message``: the stdlib's header
    registry and folder cost milliseconds per message.

    Raises PermanentDeliveryError for content no retry can fix (bad address, CR/LF in a
    header, naive date).
    """
    if date.tzinfo is None:
        raise PermanentDeliveryError("message date must be timezone-aware")
    try:
        head = (
            _unstructured("Subject", envelope.subject)
            + _address_field("From", from_name, from_addr)
            + _address_field("To", envelope.recipient_name, envelope.address)
            + _date_field(date.replace(microsecond=0))
            + _message_id_field(envelope.key, message_id_domain)
            + _campaign_key_field(envelope.key)
            + "MIME-Version: 1.0\r\n"
        )
        body = _text_part("plain", envelope.text)
        inner = ""
        if envelope.html is not None:
            inner = _boundary()
            html = _text_part("html", envelope.html)
            body = _multipart("alternative", inner, [body, html])
        if envelope.attachments:
            parts = [body]
            parts.extend(_attachment_part(a) for a in envelope.attachments)
            body = _multipart("mixed", _boundary(avoid=inner), parts)
        return head.encode("ascii") + body
    except ValueError as exc:  # includes UnicodeEncodeError (lone surrogates)
        raise PermanentDeliveryError(f"cannot build email: {exc}") from exc


def build_message(
    envelope: Envelope,
    *,
    from_addr: str,
    from_name: str,
    message_id_domain: str,
    date: datetime,
) -> EmailMessage:
    """:func:`message_bytes` parsed back into an EmailMessage (for inspection/tests).

    Flattening it with ``policy.SMTP`` gives back the same message; the send paths use
    :func:`message_bytes` directly, which is much cheaper.
    """
    raw = message_bytes(
        envelope,
        from_addr=from_addr,
        from_name=from_name,
        message_id_domain=message_id_domain,
        date=date,
    )
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- MIME writer -------------------------------------------------------------------

_MAX_LINE = 78  # RFC 5322's line limit, CRLF excluded
# RFC 2047 section 2: a header line holding an encoded-word is at most 76 characters.
_EW_LINE = 76
_EW_OVERHEAD = len("=?utf-8?b??=")
# 42 bytes are 56 base64 characters: a 68-character encoded-word (RFC 2047 allows 75),
# which fits after "From: " within 76.
_EW_MAX_BYTES = 42
# The attachment ``name=`` words leave room for ` name="` and the closing quote.
_PARAM_EW_BYTES = 42
_RAW_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, single spaces
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ATOM_PHRASE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")  # a display name needing no quotes
_PRINTABLE = re.compile(r"[ -~]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 2045 token
_MSG_ID_DOMAIN = re.compile(r"[!-;=?-~]+")  # printable ASCII except space, < and >


class _Field:
    """One header field, folded between tokens so lines stay within 78 characters."""

    __slots__ = ("done", "line")

    def __init__(self, name: str) -> None:
        self.done: list[str] = []
        self.line = name + ":"

    def token(self, text: str) -> None:
        """Append an unbreakable token after a space, on a new line if it must.

        Never right after the field's colon: a folded first line would be the bare name,
        which some parsers read as an empty value. A first token too long for the line
        stays on it (RFC 5322 allows 998 characters).
        """
        limit = _EW_LINE if "=?" in text or "=?" in self.line else _MAX_LINE
        if not self.line.endswith(":") and self.line and len(self.line) + 1 + len(text) > limit:
            self.done.append(self.line)
            self.line = ""
        self.line += " " + text

    def encoded(self, data: bytes) -> None:
        """Append UTF-8 text as base64 encoded-words, filling each line up to 76."""
        start, end = 0, len(data)
        while start < end:
            room = min(_EW_LINE - len(self.line) - 1 - _EW_OVERHEAD, 60) // 4 * 3
            cut = _char_cut(data, start, room) if room > 0 else start
            if cut == start:  # not even one character fits here: next line
                self.done.append(self.line)
                self.line = ""
                continue
            self.line += " " + _encoded_word(data[start:cut])
            start = cut

    def render(self) -> str:
        self.done.append(self.line)
        return "\r\n".join(self.done) + "\r\n"


def _char_cut(data: bytes, start: int, size: int) -> int:
    """The end of the longest run of whole UTF-8 characters from start, <= size bytes."""
    end = start + size
    if end >= len(data):
        return len(data)
    while end > start and data[end] & 0xC0 == 0x80:  # continuation byte
        end -= 1
    return end


def _encoded_word(chunk: bytes) -> str:
    return f"=?utf-8?b?{binascii.b2a_base64(chunk, newline=False).decode('ascii')}?="


def _encoded_words(data: bytes, size: int) -> list[str]:
    words: list[str] = []
    start = 0
    while start < len(data):
        cut = _char_cut(data, start, size)
        words.append(_encoded_word(data[start:cut]))
        start = cut
    return words


def _refuse_line_breaks(what: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} may not contain CR or LF characters")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unstructured(name: str, text: str) -> str:
    """Subject-like field: plain ASCII words as they are, anything else RFC 2047.

    Never folds right after the colon: parsers keep that space in an unstructured value.
    """
    _refuse_line_breaks(name, text)
    field = _Field(name)
    if _RAW_TEXT.fullmatch(text) and "=?" not in text:
        words = text.split(" ")
        if len(name) + 2 + len(words[0]) <= _MAX_LINE and all(
            len(word) < _MAX_LINE for word in words
        ):
            for word in words:
                field.token(word)
            return field.render()
    if text:
        field.encoded(text.encode("utf-8"))
    return field.render()


@functools.lru_cache(maxsize=256)
def _date_field(date: datetime) -> str:
    return f"Date: {email.utils.format_datetime(date)}\r\n"


# A plain dot-atom address (what the directory's validator lets through, nearly always)
# is its own addr-spec; anything else goes through the stdlib parser.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


@functools.lru_cache(maxsize=4096)
def _address_field(name: str, display_name: str, address: str) -> str:
    """From/To with one mailbox; cached because the parse-based check is the slow part."""
    _refuse_line_breaks(f"{name} display name", display_name)
    _refuse_line_breaks(f"{name} address", address)
    if not address.isascii():
        raise ValueError(f"{name} address is not ASCII (SMTPUTF8 is not supported)")
    if _SIMPLE_ADDRESS.fullmatch(address):
        spec = address
    else:
        try:
            spec = Address(addr_spec=address).addr_spec
        except (ValueError, IndexError, MessageError) as exc:
            raise ValueError(f"invalid {name} address: {exc}") from exc
    field = _Field(name)
    if not display_name:
        field.token(spec)
        return field.render()
    if _ATOM_PHRASE.fullmatch(display_name) and "=?" not in display_name:
        words = display_name.split(" ")
    elif (
        _PRINTABLE.fullmatch(display_name)
        and "=?" not in display_name
        and len(_quoted(display_name)) < _MAX_LINE
    ):
        words = [_quoted(display_name)]
    else:
        # Whole words of maximal size: the stdlib parser shows a space between words.
        words = _encoded_words(display_name.encode("utf-8"), _EW_MAX_BYTES)
    for word in words:
        field.token(word)
    field.token(f"<{spec}>")
    return field.render()


def campaign_key_header(key: str) -> str:
    """The ``X-Campaign-Key`` value: the key as plain ASCII on one line, never encoded.

    Printable ASCII stays as it is (keys are ids joined by ``/``); anything else (a space,
    ``%``, a non-ASCII character) is percent-encoded as UTF-8, so the value is the same
    whatever parser reads it.
    """
    return "".join(
        char if "!" <= char <= "~" and char != "%" else urllib.parse.quote(char, safe="")
        for char in key
    )


def _campaign_key_field(key: str) -> str:
    _refuse_line_breaks("X-Campaign-Key", key)
    # One line, like Message-ID: folding would add a space inside the key.
    return f"X-Campaign-Key: {campaign_key_header(key)}\r\n"


def _message_id_field(key: str, domain: str) -> str:
    if not _MSG_ID_DOMAIN.fullmatch(domain):
        raise ValueError(f"invalid message_id_domain {domain!r}")
    # One line even past 78 characters: folded, parsers keep a leading space in it.
    return f"Message-ID: {message_id_for(key, domain)}\r\n"


def _base64_body(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (57 input bytes each)."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _text_part(subtype: str, text: str) -> bytes:
    # As EmailMessage.set_content: line ends normalised to LF, one final LF.
    data = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + _base64_body(data)


def _boundary(avoid: str = "") -> str:
    # The stdlib generator's form. Every body line is base64 and every header line
    # starts with a name or a space, so no line can start with "--" + boundary.
    while True:
        boundary = f"==============={random.randrange(sys.maxsize):019d}=="
        if boundary != avoid:
            return boundary


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    field = _Field("Content-Type")
    field.token(f"multipart/{subtype};")
    field.token(f'boundary="{boundary}"')
    delimiter = b"--" + boundary.encode("ascii")
    return b"".join(
        [
            field.render().encode("ascii"),
            b"\r\n",
            delimiter,
            b"\r\n",
            (b"\r\n" + delimiter + b"\r\n").join(parts),
            b"\r\n",
            delimiter,
            b"--\r\n",
        ]
    )


def _content_type(mime_type: str) -> str:
    _refuse_line_breaks("attachment MIME type", mime_type)
    head, _, params = mime_type.partition(";")
    maintype, _, subtype = head.strip().partition("/")
    if not (_TOKEN.fullmatch(maintype) and _TOKEN.fullmatch(subtype)):
        return "application/octet-stream"
    params = params.strip()
    if maintype.lower() == "text" and "charset=" not in params.lower():
        # Every text the service attaches (CSV digests) is UTF-8: say so, or mail
        # clients guess (GBK in most Chinese ones) and show mojibake.
        params = f"{params}; charset=utf-8" if params else "charset=utf-8"
    if not params:
        return f"{maintype}/{subtype}"
    if not _PRINTABLE.fullmatch(params):
        raise ValueError("attachment MIME type parameters must be printable ASCII")
    return f"{maintype}/{subtype}; {params}"


def _rfc2231_words(param: str, value: str) -> list[str]:
    """``param*=utf-8''...``, split into ``param*N*=`` sections between characters."""
    pieces = [urllib.parse.quote(char, safe="") for char in value]
    single = f"{param}*=utf-8''{''.join(pieces)}"
    if 1 + len(single) <= _MAX_LINE:
        return [single]
    words: list[str] = []
    word = f"{param}*0*=utf-8''"
    fresh = True
    for piece in pieces:
        # Each section on its own line: a space before it, a semicolon after it.
        if not fresh and 1 + len(word) + len(piece) + 1 > _MAX_LINE:
            words.append(word + ";")
            word = f"{param}*{len(words)}*="
        word += piece
        fresh = False
    words.append(word)
    return words


def _attachment_part(attachment: Attachment) -> bytes:
    name = attachment.filename
    _refuse_line_breaks("attachment filename", name)
    content_type = _Field("Content-Type")
    content_type.token(_content_type(attachment.mime_type) + ";")
    disposition = _Field("Content-Disposition")
    disposition.token("attachment;")
    quoted = _quoted(name) if _PRINTABLE.fullmatch(name) and "=?" not in name else ""
    if quoted and 1 + len("filename=") + len(quoted) <= _MAX_LINE:
        disposition.token(f"filename={quoted}")
    else:
        for word in _rfc2231_words("filename", name):
            disposition.token(word)
    if quoted and 1 + len("name=") + len(quoted) <= _MAX_LINE:
        content_type.token(f"name={quoted}")
    else:
        # RFC 2047 ``name=`` too: QQ Mail and Outlook POP/IMAP ignore RFC 2231.
        words = _encoded_words(name.encode("utf-8"), _PARAM_EW_BYTES)
        words[0] = 'name="' + words[0]
        words[-1] += '"'
        for word in words:
            content_type.token(word)
    head = (
        content_type.render()
        + "Content-Transfer-Encoding: base64\r\n"
        + disposition.render()
        + "\r\n"
    )
    return head.encode("ascii") + _base64_body(attachment.content)


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
        self._last_used: dict[int, float] = {}  # id(client) -> monotonic time of last send

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
        client = await self._idle.get()
        try:
            async with asyncio.timeout(self.settings.timeout):
                response = await self._send_on(client, raw, envelope.address)
        except BaseException as exc:
            # Unknown protocol state after any failure or cancellation: start clean.
            client.close()
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
            self._idle.put_nowait(client)
        message_id = message_id_for(envelope.key, self.settings.message_id_domain)
        return SendResult(provider_id=message_id, detail=response)

    async def _send_on(self, client: aiosmtplib.SMTP, raw: bytes, to: str) -> str:
        reused = client.is_connected
        if reused and time.monotonic() - self._last_used.get(id(client), 0.0) > PROBE_IDLE:
            # A session idle for a while may have been dropped by the server (or a NAT)
            # without us noticing yet: probe before the transaction, not during it.
            try:
                await client.noop()
            except _STALE_SESSION:
                client.close()
            reused = client.is_connected
        if not client.is_connected:
            await client.connect()
        try:
            response = await self._transaction(client, raw, to)
        except aiosmtplib.SMTPServerDisconnected as exc:
            # A busy session is not probed (a NOOP per message costs a round trip); if
            # the server hung up in between, MAIL FROM finds out. Nothing of the message
            # was sent before DATA, so one retry on a new session cannot duplicate it.
            if not reused or getattr(exc, "stage", "") != "mail":
                raise
            client.close()
            await client.connect()
            response = await self._transaction(client, raw, to)
        self._last_used[id(client)] = time.monotonic()
        return response

    async def _transaction(self, client: aiosmtplib.SMTP, raw: bytes, to: str) -> str:
        """MAIL, RCPT, DATA for one recipient (``sendmail`` without re-validation).

        Pre-rendered 7-bit bytes, so aiosmtplib does not copy and re-flatten the message.
        A disconnect during MAIL FROM is marked (``stage = "mail"``): nothing was sent.
        """
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        options = [f"size={len(raw)}"] if client.supports_extension("size") else []
        try:
            await client.mail(self.settings.from_addr, options=options)
        except aiosmtplib.SMTPServerDisconnected as exc:
            exc.stage = "mail"  # type: ignore[attr-defined]
            raise
        try:
            await client.rcpt(to)
            response = await client.data(raw)
        except aiosmtplib.SMTPResponseException:
            # As sendmail: reset the envelope so the session stays usable.
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await client.rset()
            raise
        return response.message

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
