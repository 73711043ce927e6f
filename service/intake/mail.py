"""Reading an e-mail as Chinese clients send it: GB2312/GBK/GB18030 declared or not,
base64 or quoted-printable, forwarded (message/rfc822), HTML-only, encoded file names."""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

MAX_MAIL_BYTES = 40 * 2**20  # 163.com allows 50 MB; attachments are base64 (+33%)
MAX_DEPTH = 5  # forwards of forwards
SHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".csv", ".et", ".xltx", ".ods")
_SHEET_TYPES = ("spreadsheet", "excel", "csv", "officedocument.spreadsheetml")
# GB2312 and GBK are subsets of GB18030: decoding with the superset never fails on what
# Outlook/Foxmail label as the older names (they write GBK characters under "gb2312").
_UPGRADE = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030"}


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Mail:
    message_id: str | None
    sender: str | None  # the address, lower-cased
    sender_name: str
    subject: str
    date: datetime | None
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    sha256: str = ""

    @property
    def key(self) -> str:
        """What makes this e-mail itself (not its attachments) unique."""
        return self.message_id or self.sha256


def charset(name: str | None) -> str:
    name = (name or "utf-8").lower().strip().strip('"')
    return _UPGRADE.get(name, name)


def decode_bytes(data: bytes, declared: str | None) -> str:
    for candidate in (charset(declared), "utf-8", "gb18030"):
        try:
            return data.decode(candidate)
        except (LookupError, ValueError):  # ValueError: a charset name with a NUL in it
            continue
    return data.decode("utf-8", errors="replace")


def header_text(value: object) -> str:
    """An RFC 2047 header (or a raw 8-bit one, as some clients send) as text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    parts = []
    try:
        pieces = decode_header(value)
    except Exception:  # malformed encoded words: keep the raw text
        return value
    for chunk, enc in pieces:
        parts.append(decode_bytes(chunk, enc) if isinstance(chunk, bytes) else chunk)
    return re.sub(r"\s+", " ", "".join(parts)).strip()


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\n\s*\n+", "\n", "".join(parser.out)).strip()


def _filename(part: Message) -> str:
    # Content-Disposition's filename, else Content-Type's name; RFC 2231 (name*=) decoded.
    raw = part.get_filename()
    return header_text(raw) if raw else ""


def _is_sheet(ctype: str, filename: str) -> bool:
    return filename.lower().endswith(SHEET_SUFFIXES) or any(t in ctype for t in _SHEET_TYPES)


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _parts(msg: Message, depth: int) -> Iterator[Message]:
    """Leaf parts, forwarded messages included (also when a client base64-encoded them)."""
    if msg.get_content_type() == "message/rfc822":
        cte = str(msg.get("Content-Transfer-Encoding") or "").lower().strip()
        if cte in ("base64", "quoted-printable") and depth < MAX_DEPTH:
            inner = msg.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            body = first.get_payload() if isinstance(first, Message) else inner
            text = body if isinstance(body, str) else ""
            try:
                raw = (
                    base64.b64decode(text, validate=False)
                    if cte == "base64"
                    else quopri.decodestring(text.encode("ascii", "replace"))
                )
            except (binascii.Error, ValueError):
                return  # an undecodable forward: the outer message still stands
            yield from _parts(email.message_from_bytes(raw), depth + 1)
            return
    if msg.is_multipart():
        payload = msg.get_payload()
        for sub in payload if isinstance(payload, list) else ():
            if isinstance(sub, Message):
                yield from _parts(sub, depth + (sub.get_content_type() == "message/rfc822"))
        return
    yield msg


def parse_mail(raw: bytes, depth: int = 0) -> Mail:
    """Parse one message; attachments of forwarded messages are included."""
    msg = email.message_from_bytes(raw[:MAX_MAIL_BYTES])
    addresses = getaddresses([header_text(msg.get("From"))])
    name, address = addresses[0] if addresses else ("", "")
    try:
        when = parsedate_to_datetime(str(msg.get("Date"))) if msg.get("Date") else None
        if when is not None and when.tzinfo is None:
            when = None  # a date without zone cannot be placed in time
    except (TypeError, ValueError, IndexError):
        when = None
    message_id = str(msg.get("Message-ID") or "").strip() or None
    mail = Mail(
        message_id=message_id[:500] if message_id else None,
        sender=address.lower()[:256] or None,
        sender_name=name,
        subject=header_text(msg.get("Subject")),
        date=when,
        text="",
        sha256=hashlib.sha256(raw).hexdigest(),
    )
    plain: list[str] = []
    html: list[str] = []
    for part in _parts(msg, depth):
        disposition = str(part.get("Content-Disposition") or "").lower()
        # Without a disposition and a name= in its type, a part has no file name: the
        # text parts skip get_filename's parameter parsing.
        named = disposition or "name" in str(part.get("Content-Type") or "").lower()
        filename = _filename(part) if named else ""
        ctype = part.get_content_type()
        # Payloads are decoded only where used: not for pictures, signatures and the like.
        if filename or "attachment" in disposition:
            if _is_sheet(ctype, filename):
                mail.attachments.append(Attachment(filename or "附件", _payload(part)))
            continue
        if ctype == "text/plain":
            plain.append(decode_bytes(_payload(part), part.get_content_charset()))
        elif ctype == "text/html":
            html.append(html_to_text(decode_bytes(_payload(part), part.get_content_charset())))
    mail.text = "\n".join(plain) if plain else "\n".join(html)
    return mail
