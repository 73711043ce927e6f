"""Console accounts in the store: users, API tokens, personal-link versions, login
throttle and the answers to idempotent API writes. No hashing or signing here: callers
pass hashes in (service/web/security.py, service/links.py)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock
from .tables import api_requests, api_tokens, login_throttle, person_links, users

ROLES = ("office-admin", "office", "supervisor")
TOKEN_ROLES = ("office", "supervisor")
_IN_CHUNK = 500  # SQLite's bound-parameter limit is far above; keeps statements small


class AccountError(Exception):
    """A refused account change; the message names the field."""


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    role: str
    scope: str | None
    password_hash: str
    disabled: bool


@dataclass(frozen=True)
class TokenRow:
    id: int
    label: str
    role: str
    scope: str | None


@dataclass(frozen=True)
class SavedRequest:
    action: str
    fingerprint: str
    status: int
    response: Any


class Accounts:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    # -- users -------------------------------------------------------------------------
    async def add_user(self, name: str, role: str, scope: str | None, password_hash: str) -> int:
        if role not in ROLES:
            raise AccountError(f"role: must be one of {', '.join(ROLES)}")
        if role == "supervisor" and not scope:
            raise AccountError("scope: a supervisor needs a scope (a unit id)")
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    users.insert()
                    .values(
                        name=name,
                        role=role,
                        scope=scope,
                        password_hash=password_hash,
                        created_at=self.clock.now(),
                    )
                    .returning(users.c.id)
                )
                return int(result.scalar_one())
        except IntegrityError:
            raise AccountError(f"name: user {name!r} already exists") from None

    async def user(self, name: str) -> UserRow | None:
        u = users.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(u.id, u.name, u.role, u.scope, u.password_hash, u.disabled_at).where(
                        u.name == name
                    )
                )
            ).first()
        if row is None:
            return None
        return UserRow(int(row[0]), row[1], row[2], row[3], row[4], row[5] is not None)

    async def users(self) -> list[UserRow]:
        u = users.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(u.id, u.name, u.role, u.scope, u.password_hash, u.disabled_at).order_by(
                    u.name
                )
            )
            return [UserRow(int(r[0]), r[1], r[2], r[3], r[4], r[5] is not None) for r in rows]

    async def set_password(self, name: str, password_hash: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                users.update().where(users.c.name == name).values(password_hash=password_hash)
            )
            return bool(result.rowcount)

    # -- API tokens --------------------------------------------------------------------
    async def add_token(self, token_hash: str, label: str, role: str, scope: str | None) -> int:
        if role not in TOKEN_ROLES:
            raise AccountError(f"role: must be one of {', '.join(TOKEN_ROLES)}")
        if role == "supervisor" and not scope:
            raise AccountError("scope: a supervisor token needs a scope (a unit id)")
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_tokens.insert()
                .values(
                    token_hash=token_hash,
                    label=label,
                    role=role,
                    scope=scope,
                    created_at=self.clock.now(),
                )
                .returning(api_tokens.c.id)
            )
            return int(result.scalar_one())

    async def token(self, token_hash: str) -> TokenRow | None:
        t = api_tokens.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(t.id, t.label, t.role, t.scope).where(
                        t.token_hash == token_hash, t.revoked_at.is_(None)
                    )
                )
            ).first()
        return None if row is None else TokenRow(int(row[0]), row[1], row[2], row[3])

    async def tokens(self) -> list[TokenRow]:
        t = api_tokens.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t.id, t.label, t.role, t.scope)
                .where(t.revoked_at.is_(None))
                .order_by(t.id)
            )
            return [TokenRow(int(r[0]), r[1], r[2], r[3]) for r in rows]

    async def revoke_token(self, token_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock.now())
            )
            return bool(result.rowcount)

    # -- personal links ----------------------------------------------------------------
    async def link_version(self, person: str) -> int:
        """The version a new link of ``person`` carries (1 until first revoked)."""
        async with self.engine.connect() as conn:
            version = (
                await conn.execute(
                    sa.select(person_links.c.version).where(person_links.c.person_id == person)
                )
            ).scalar_one_or_none()
        return 1 if version is None else int(version)

    async def link_versions(self, people: Collection[str]) -> dict[str, int]:
        """The current link version of each of ``people`` in one query (a dispatch batch)."""
        wanted = sorted(set(people))
        out = dict.fromkeys(wanted, 1)
        if not wanted:
            return out
        p = person_links.c
        async with self.engine.connect() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                rows = await conn.execute(
                    sa.select(p.person_id, p.version).where(
                        p.person_id.in_(wanted[start : start + _IN_CHUNK])
                    )
                )
                out.update((str(r[0]), int(r[1])) for r in rows)
        return out

    async def revoke_links(self, person: str) -> int:
        """Invalidate every link issued to ``person`` so far; returns the new version."""
        now = self.clock.now()
        p = person_links.c
        async with self.engine.begin() as conn:
            current = (
                await conn.execute(sa.select(p.version).where(p.person_id == person))
            ).scalar_one_or_none()
            if current is None:
                await conn.execute(
                    person_links.insert().values(person_id=person, version=2, updated_at=now)
                )
                return 2
            await conn.execute(
                person_links.update()
                .where(p.person_id == person)
                .values(version=p.version + 1, updated_at=now)
            )
            return int(current) + 1

    # -- login throttle ----------------------------------------------------------------
    async def locked_until(self, name: str) -> datetime | None:
        now = self.clock.now()
        async with self.engine.connect() as conn:
            until = (
                await conn.execute(
                    sa.select(login_throttle.c.locked_until).where(login_throttle.c.name == name)
                )
            ).scalar_one_or_none()
        return until if until is not None and until > now else None

    async def login_failed(
        self, name: str, limit: int, window: timedelta, lock: timedelta
    ) -> datetime | None:
        """Count a failure; after ``limit`` within ``window`` the name is locked for ``lock``."""
        now = self.clock.now()
        t = login_throttle.c
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(sa.select(t.failures, t.window_start).where(t.name == name))
            ).first()
            if row is None or now - row[1] > window:
                failures, start = 1, now
            else:
                failures, start = int(row[0]) + 1, row[1]
            until = now + lock if failures >= limit else None
            values = {"failures": failures, "window_start": start, "locked_until": until}
            if row is None:
                await conn.execute(login_throttle.insert().values(name=name, **values))
            else:
                await conn.execute(login_throttle.update().where(t.name == name).values(**values))
        return until

    async def login_succeeded(self, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(login_throttle.delete().where(login_throttle.c.name == name))

    # -- idempotent API writes ---------------------------------------------------------
    async def saved_request(self, principal: str, key: str) -> SavedRequest | None:
        r = api_requests.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(r.action, r.fingerprint, r.status, r.response).where(
                        r.principal == principal, r.idem_key == key
                    )
                )
            ).first()
        return None if row is None else SavedRequest(row[0], row[1], int(row[2]), row[3])

    async def reserve_request(
        self, principal: str, key: str, action: str, fingerprint: str
    ) -> SavedRequest | None:
        """Claim ``key`` for a write about to happen: None when claimed for us, else what
        an earlier request with that key left (status 0: still in progress)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    api_requests.insert().values(
                        principal=principal,
                        idem_key=key,
                        action=action,
                        fingerprint=fingerprint,
                        status=0,
                        response={},
                        created_at=self.clock.now(),
                    )
                )
        except IntegrityError:
            return await self.saved_request(principal, key)
        return None

    async def complete_request(self, principal: str, key: str, status: int, response: Any) -> None:
        r = api_requests.c
        async with self.engine.begin() as conn:
            await conn.execute(
                api_requests.update()
                .where(r.principal == principal, r.idem_key == key)
                .values(status=status, response=response)
            )

    async def release_request(self, principal: str, key: str) -> None:
        """Forget a claimed key whose write failed: a corrected retry may use it again."""
        r = api_requests.c
        async with self.engine.begin() as conn:
            await conn.execute(
                api_requests.delete().where(r.principal == principal, r.idem_key == key)
            )
