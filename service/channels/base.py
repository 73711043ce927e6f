"""The channel interface every delivery backend implements.

Exception tree::

    DeliveryError
    ├── TransientDeliveryError   retry later (SMTP 4xx, timeouts, HTTP 429/5xx, throttling)
    └── PermanentDeliveryError   never retry this message (SMTP 5xx, bad number, bad template)
        └── ChannelConfigError   the channel itself is misconfigured (auth, TLS, signature)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

# Re-exported: every channel masks through these.
from ..logs import mask_address as mask_address
from ..logs import mask_text as mask_text

ChannelName = Literal["email", "sms"]


@dataclass(frozen=True)
class Attachment:
    """A file attached to an email (digests carry the overdue list as CSV or XLSX)."""

    filename: str
    content: bytes
    mime_type: str  # e.g. "text/csv" or the xlsx MIME type


@dataclass(frozen=True)
class Envelope:
    """One rendered message to one recipient on one channel.

    ``key`` is the message's idempotency key
    (``campaign/obligation/period/unit-or-scope/step/recipient/channel``); channels derive
    every downstream id from it (email ``Message-ID``, SMS ``OutId``/``SessionContext``)
    so that a resend after a crash can be de-duplicated by the receiving system.
    """

    key: str
    channel: ChannelName
    recipient_name: str
    address: str  # email address, or mobile number in E.164 (+8613800000000)
    subject: str  # email subject; for SMS a short label used in logs and the outbox
    text: str  # email plain-text body; for SMS the local preview of the final text
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # SMS only: logical template name (e.g. "reminder"); each provider maps it to its
    # registered template code. Params are ordered: Tencent uses them positionally.
    sms_template: str | None = None
    sms_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What a channel learnt when the provider accepted the message."""

    provider_id: str | None = None
    detail: str = ""


class DeliveryError(Exception):
    """A send did not succeed. ``code`` is the provider's code or SMTP status, as text."""

    permanent: bool = False

    def __init__(self, message: str, *, code: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class TransientDeliveryError(DeliveryError):
    """Worth retrying with backoff; ``retry_after`` (seconds) is a hint from the peer."""

    permanent = False


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: the message ends ``failed`` with this reason."""

    permanent = True


class ChannelConfigError(PermanentDeliveryError):
    """The channel is misconfigured (credentials, TLS, unknown template): alert ops."""


@runtime_checkable
class Channel(Protocol):
    """A delivery backend.

    ``send`` either returns a :class:`SendResult` (the peer accepted the message) or
    raises a :class:`DeliveryError` subclass that says whether a retry can help. It must
    never raise anything else for a delivery problem. Implementations are safe to call
    concurrently from several tasks; ``aclose`` releases pooled connections.
    """

    name: ChannelName

    async def send(self, envelope: Envelope) -> SendResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StatusQuery(Protocol):
    """A channel whose provider can say whether it already accepted a message.

    SMS providers' SendSms is not idempotent: after a timeout (or a crash after the send)
    the dispatcher asks before sending again. ``find_accepted`` returns the provider's
    record for ``envelope`` (matched by the out-id derived from its key) accepted at or
    after ``since``, or None when the provider has no such record. It raises
    :class:`DeliveryError` when the provider cannot answer.
    """

    async def find_accepted(self, envelope: Envelope, since: datetime) -> SendResult | None: ...


def message_id_for(key: str, domain: str) -> str:
    """A deterministic RFC 5322 Message-ID for an idempotency key."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def out_id_for(key: str, length: int = 32) -> str:
    """A deterministic, provider-safe correlation id (hex) for an idempotency key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:length]
