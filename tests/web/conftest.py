"""Console fixtures: the app on each backend (via tests/conftest.py's ``migrated_engine``),
signed-in clients for every kind of principal, and a way to read CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.channels.base import Channel
from service.channels.file_outbox import FileOutbox, OutboxChannel
from service.clock import VirtualClock
from service.config import Settings
from service.cycle import Reconciler
from service.dispatcher import Dispatcher, RetryPolicy
from service.links import PersonLinks
from service.runtime import Runtime
from service.store.accounts import Accounts
from service.store.ledger import Ledger
from service.store.outbox import Outbox
from service.web.app import create_app
from service.web.security import new_api_token, token_hash
from service.web.state import WebSettings, WebState
from tests.conftest import local

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_LINK = re.compile(r"https?://\S+/l/[A-Za-z0-9_.\-]+")
# A: changchun (region R's root), B: jilin-city; R = changchun's subtree; E = yanbian.
UNIT_A, UNIT_B, REGION_R, REGION_E = "changchun", "jilin-city", "changchun", "yanbian"


@pytest.fixture
def web_clock() -> VirtualClock:
    """2023-06-26 10:00 Shanghai: W25 and the registration are overdue, W26 is open."""
    return VirtualClock(local("2023-06-26T10:00"))


@pytest.fixture
def web_settings() -> WebSettings:
    """Test secrets and a short login lock-out (3 failures)."""
    return WebSettings(
        session_secret="s" * 32,
        link_secret="l" * 32,
        login_limit=3,
        login_window=timedelta(minutes=15),
        login_lock=timedelta(minutes=15),
    )


@pytest.fixture
def settings(
    tmp_path: Path, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> Settings:
    """The shipped campaign with state under tmp_path."""
    return Settings(
        schedule=schedule_path, contacts=contacts_dir, templates=templates_dir, state_dir=tmp_path
    )


@pytest.fixture
def app(
    settings: Settings,
    migrated_engine: AsyncEngine,
    runtime: Runtime,
    web_clock: VirtualClock,
    web_settings: WebSettings,
) -> FastAPI:
    """The console on the test database (SQLite and PostgreSQL)."""
    return create_app(
        settings, web_clock, web=web_settings, engine=migrated_engine, runtime=runtime
    )


@pytest.fixture
def web_state(app: FastAPI) -> WebState:
    state: WebState = app.state.web
    return state


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous in-process client (no redirects followed)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        yield c


def links_in_outbox(folder: Path, address: str) -> list[str]:
    """The personal links in the file outbox's e-mails to ``address``, oldest first."""
    out = []
    for path in sorted(folder.glob("*.eml")):  # the names start with the sending time
        msg = BytesParser(policy=default).parsebytes(path.read_bytes())
        if address in str(msg["To"]):
            body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            out += [m.group(0) for m in _LINK.finditer(body)]
    return out


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


_HASH: list[str] = []


def _hashed() -> str:
    """A cheap argon2 hash (the parameters travel in the hash, so verifying it is cheap
    too); production hashes use argon2-cffi's defaults (~0.5 s here)."""
    if not _HASH:
        _HASH.append(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD))
    return _HASH[0]


@dataclass
class Users:
    accounts: Accounts
    tokens: dict[str, str]


@pytest.fixture
async def users(web_state: WebState) -> Users:
    """admin, operator, sup-r (scope changchun), sup-e (scope yanbian); office and scoped
    API tokens."""
    acc = web_state.accounts
    hashed = _hashed()
    for name, role, scope in (
        ("admin", "office-admin", None),
        ("operator", "office", None),
        ("sup-r", "supervisor", REGION_R),
        ("sup-e", "supervisor", REGION_E),
    ):
        await acc.add_user(name, role, scope, hashed)
    tokens = {}
    for label, role, scope in (
        ("unscoped", "office", None),
        ("scoped", "supervisor", REGION_R),
    ):
        token = new_api_token()
        await acc.add_token(token_hash(token), label, role, scope)
        tokens[label] = token
    return Users(acc, tokens)


Login = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def login(app: FastAPI, users: Users) -> AsyncIterator[Login]:
    """Sign a fresh client in as a console user; returns it."""
    opened: list[httpx.AsyncClient] = []

    async def sign_in(name: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        opened.append(c)
        page = await c.get("/login")
        r = await c.post(
            "/login", data={"name": name, "password": PASSWORD, "csrf": csrf_of(page.text)}
        )
        assert r.status_code == 303, r.text
        return c

    yield sign_in
    for c in opened:
        await c.aclose()


@pytest.fixture
async def link_client(
    app: FastAPI, web_state: WebState, web_clock: VirtualClock
) -> AsyncIterator[Callable[[str], Awaitable[httpx.AsyncClient]]]:
    """A client that entered through a person's personal link."""
    opened: list[httpx.AsyncClient] = []

    async def enter(person: str) -> httpx.AsyncClient:
        version = await web_state.accounts.link_version(person)
        token = web_state.signer.issue(person, version, web_clock.now())
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        opened.append(c)
        r = await c.get(f"/l/{token}")
        assert r.status_code == 303, r.text
        return c

    yield enter
    for c in opened:
        await c.aclose()


@pytest.fixture
async def failed_message(migrated_engine: AsyncEngine) -> tuple[int, str]:
    """One failed reminder bundle to changchun's liaison in the outbox: (id, key)."""

    from service.store.tables import messages

    key = "jilin-2023/2023-06-20T09:00/changchun-liaison/email"
    due, expires = local("2023-06-20T09:00"), local("2023-06-21T17:00")
    retried = due + timedelta(minutes=5)  # the attempt that failed for good
    async with migrated_engine.begin() as conn:
        result = await conn.execute(
            messages.insert()
            .values(
                idem_key=key,
                campaign="jilin-2023",
                kind="reminder",
                step="reminder1-1wd",
                obligation="weekly-progress",
                periods=["weekly-progress@2023-W25"],
                units=["changchun"],
                recipient_id="changchun-liaison",
                channel="email",
                due_at=due,
                next_attempt_at=retried,
                expires_at=expires,
                status="failed",
                reason="permanent: 550 mailbox unavailable",
                attempts=2,
                created_at=due,
                updated_at=retried,
                subject="【提醒】请报送",
                body="李海燕：请于 6 月 21 日 17:00 前报送。",
                items=[
                    {
                        "obligation": "weekly-progress",
                        "period": "2023-W25",
                        "unit": "changchun",
                        "step": "reminder1-1wd",
                        "kind": "reminder",
                        "expires": expires.isoformat(),
                    }
                ],
            )
            .returning(messages.c.id)
        )
        return int(result.scalar_one()), key


@pytest.fixture
def reconciler(
    runtime: Runtime,
    migrated_engine: AsyncEngine,
    web_clock: VirtualClock,
    web_state: WebState,
    tmp_path: Path,
) -> Reconciler:
    """The daemon's cycle on the test database, sending into a file outbox (nobody
    contacted); its e-mails carry personal links signed like the console's."""
    outbox = Outbox(migrated_engine, "jilin-2023")
    ledger = Ledger(migrated_engine, "jilin-2023", web_clock)
    files = FileOutbox(
        tmp_path / "outbox", from_addr="office@example.org", clock=web_clock.now, durable=False
    )
    channels: dict[str, Channel] = {
        "email": OutboxChannel(files, "email"),
        "sms": OutboxChannel(files, "sms"),
    }
    links = PersonLinks(web_state.signer, web_state.accounts)
    dispatcher = Dispatcher(
        runtime, outbox, ledger, channels, web_clock, "w1", RetryPolicy(), links=links
    )
    return Reconciler(runtime, outbox, ledger, dispatcher, web_clock)
