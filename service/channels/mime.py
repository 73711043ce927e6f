"""The e-mail writer: RFC 5322/MIME bytes for an envelope, shared by SMTP and the file outbox.

7-bit, CRLF line ends, lines within 78 characters (76 where they hold RFC 2047
encoded-words), headers that refuse CR/LF. Written directly instead of through
``email.message``: the stdlib's header registry and folder cost milliseconds per message.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import email.utils
import functools
import random
import re
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage

from service.channels.base import (
    Attachment,
    Envelope,
    PermanentDeliveryError,
    message_id_for,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def message_bytes(
    envelope: Envelope,
    *,
    from_addr: str,
    from_name: str,
    message_id_domain: str,
    date: datetime,
) -> bytes:
    """The exact bytes the email channel sends and the file outbox writes.

    A 7-bit MIME message with CRLF line ends and lines of at most 78 characters (76
    with an encoded-word; a field's single unbreakable first token may run longer):
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
_KEY_AS_IS = re.compile(r"[!-$&-~]*")  # printable ASCII except space and %


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


@functools.lru_cache(maxsize=1024)  # a busy moment sends one subject to many people
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
SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


@functools.lru_cache(maxsize=4096)
def _address_field(name: str, display_name: str, address: str) -> str:
    """From/To with one mailbox; cached because the parse-based check is the slow part."""
    _refuse_line_breaks(f"{name} display name", display_name)
    _refuse_line_breaks(f"{name} address", address)
    if not address.isascii():
        raise ValueError(f"{name} address is not ASCII (SMTPUTF8 is not supported)")
    if SIMPLE_ADDRESS.fullmatch(address):
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
    if _KEY_AS_IS.fullmatch(key):
        return key
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
    # One b2a_base64 call, then cut: encodebytes calls it per line and re-joins.
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join([encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76)])


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
