"""Personal links: a signed, expiring token bound to one person (liaison or head).

Domain level on purpose (no web imports): message rendering puts the same link into
e-mails. A token is ``[person, version, expires]`` signed with the key from
``SERVICE_LINK_SECRET``. It is refused when the signature is wrong (tampered, or the key
was rotated: that revokes every link at once), when it expired (judged by the injected
clock, not the signer's wall clock), or when its version is older than the person's
current one in the store (revoking one person's links: ``Accounts.revoke_links``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from itsdangerous import BadSignature, URLSafeSerializer

LINK_SECRET_ENV = "SERVICE_LINK_SECRET"
PUBLIC_URL_ENV = "SERVICE_PUBLIC_URL"
DEFAULT_TTL = timedelta(days=45)  # a campaign phase: links in June mails still work in July
_SALT = "person-link/v1"
# E-mails that carry the recipient's link: bundles someone can answer with "已报送" and
# digests (a supervisor's link opens the scope's live overdue list). Notices have nothing
# to submit; SMS never carries a link (mainland providers refuse unregistered links).
LINKED_KINDS = frozenset({"reminder", "overdue", "escalation", "digest"})
LINKED_ROLES = frozenset({"liaison", "head", "supervisor"})
REDACTED = "（个人链接，已隐去）"


class LinkError(Exception):
    """A link that cannot be honoured; ``reason`` is for the log, never for the page."""

    def __init__(self, reason: Literal["tampered", "expired", "revoked", "unknown"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LinkClaims:
    person: str
    version: int
    expires: datetime


class LinkSigner:
    def __init__(self, secret: str, ttl: timedelta = DEFAULT_TTL) -> None:
        if len(secret) < 16:
            raise ValueError(f"{LINK_SECRET_ENV}: needs at least 16 characters")
        self._serializer = URLSafeSerializer(secret, salt=_SALT)
        self.ttl = ttl

    def issue(self, person: str, version: int, now: datetime) -> str:
        expires = int((now + self.ttl).timestamp())
        token: str = self._serializer.dumps([person, version, expires])
        return token

    def verify(self, token: str, now: datetime) -> LinkClaims:
        """The claims of a well-signed, unexpired token; the version is checked by the caller."""
        try:
            data = self._serializer.loads(token)
        except BadSignature:
            raise LinkError("tampered") from None
        if (
            not isinstance(data, list)
            or len(data) != 3
            or not isinstance(data[0], str)
            or not isinstance(data[1], int)
            or not isinstance(data[2], int)
        ):
            raise LinkError("tampered")
        expires = datetime.fromtimestamp(data[2], UTC)
        if now >= expires:
            raise LinkError("expired")
        return LinkClaims(data[0], data[1], expires)


def signer_from_env(ttl: timedelta = DEFAULT_TTL) -> LinkSigner | None:
    secret = os.environ.get(LINK_SECRET_ENV)
    return LinkSigner(secret, ttl) if secret else None


def public_url() -> str:
    """Where people reach the console (e.g. https://aqsc.example.gov.cn); no trailing slash."""
    return os.environ.get(PUBLIC_URL_ENV, "http://127.0.0.1:8080").rstrip("/")


def link_url(token: str, base: str | None = None) -> str:
    return f"{base or public_url()}/l/{token}"


def feed_url(token: str, base: str | None = None) -> str:
    return f"{base or public_url()}/feeds/unit/{token}.ics"


class LinkVersions(Protocol):
    """Where the current link version of each person is kept (store.accounts.Accounts)."""

    async def link_versions(self, people: Collection[str]) -> dict[str, int]: ...


@dataclass(frozen=True)
class PersonLinks:
    """Personal links for outgoing e-mails: the signer, the versions, the public address."""

    signer: LinkSigner
    versions: LinkVersions
    base: str | None = None

    def wanted(self, kind: str, channel: str, role: str) -> bool:
        return channel == "email" and kind in LINKED_KINDS and role in LINKED_ROLES

    def context(self, person: str, version: int, now: datetime) -> dict[str, Any]:
        """The template's ``link``: its URL and for how many days it works."""
        url = link_url(self.signer.issue(person, version, now), self.base)
        return {"url": url, "days": self.signer.ttl.days}


def person_links_from_env(versions: LinkVersions) -> PersonLinks | None:
    """Links in e-mails when ``SERVICE_LINK_SECRET`` is set; None (no links) otherwise."""
    signer = signer_from_env()
    return None if signer is None else PersonLinks(signer, versions, public_url())
