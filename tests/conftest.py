"""Shared fixtures: the shipped campaign, a virtual clock, databases on both backends.

Database fixtures (all function-scoped):

- ``db_url``: parametrized ``sqlite`` (a file under ``tmp_path``) / ``postgres`` (a
  fresh schema ``t_<hex>`` in database ``test`` at 127.0.0.1:5432, dropped afterwards;
  skipped when the server is unreachable). On PostgreSQL the URL alone does not
  select the schema: use ``engine``.
- ``engine``: an ``AsyncEngine`` from ``service.store.db.create_engine`` bound to that
  database (PostgreSQL: ``search_path`` set to the test schema).
- ``migrated_engine``: ``engine`` after ``service.store.db.migrate``.
- ``ledger``: ``Ledger(migrated_engine, "jilin-2023", clock)``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.model import CampaignModel, load_model
from service.runtime import Runtime
from service.store.db import create_engine, migrate
from service.store.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
PG_HOST, PG_PORT, PG_USER, PG_DATABASE = "127.0.0.1", 5432, "postgres", "test"
PG_URL = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
_PG_SCHEMA = pytest.StashKey[str]()


def local(text: str) -> datetime:
    """An aware datetime in the campaign's zone from ``YYYY-MM-DDTHH:MM``."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


async def _pg_connect() -> asyncpg.Connection:
    return await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_DATABASE, timeout=3
    )


@pytest.fixture(scope="session")
def schedule_path() -> Path:
    """The shipped campaign schedule."""
    return ROOT / "schedules" / "jilin-2023.yaml"


@pytest.fixture(scope="session")
def contacts_dir() -> Path:
    """The shipped sample directory (units.csv, people.csv)."""
    return ROOT / "contacts"


@pytest.fixture(scope="session")
def model(schedule_path: Path, contacts_dir: Path) -> CampaignModel:
    """The shipped campaign, loaded once (the model is never mutated)."""
    return load_model(schedule_path, contacts_dir)


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock at the notice's date, 2023-05-18 09:00 Asia/Shanghai."""
    return VirtualClock(local("2023-05-18T09:00"))


@pytest.fixture
def write_schedule(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to a schedule file under ``tmp_path`` and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"schedule-{next(counter)}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (checked once per session), or None."""

    async def probe() -> None:
        conn = await _pg_connect()
        await conn.close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} not reachable: {exc!r}"
    finally:
        loop.close()
    return None


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_unreachable: str | None
) -> AsyncIterator[str]:
    """A database URL on each backend; PostgreSQL gets a fresh schema per test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
        return
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    schema = f"t_{uuid.uuid4().hex}"
    conn = await _pg_connect()
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    request.node.stash[_PG_SCHEMA] = schema
    try:
        yield PG_URL
    finally:
        conn = await _pg_connect()
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def engine(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``db_url`` (PostgreSQL: search_path is the test's own schema)."""
    schema = request.node.stash.get(_PG_SCHEMA, None)
    if schema is None:
        eng = create_engine(db_url)
    else:
        eng = create_engine(db_url, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def migrated_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` with the schema migrated to head."""
    await migrate(engine)
    return engine


@pytest.fixture
def ledger(migrated_engine: AsyncEngine, clock: VirtualClock) -> Ledger:
    """The submissions ledger of the shipped campaign on a migrated database."""
    return Ledger(migrated_engine, "jilin-2023", clock)


# --- Added for the planner / dispatcher / simulation tests ---------------------------------


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    """The shipped message templates (email/*, sms.yaml)."""
    return ROOT / "templates"


@pytest.fixture(scope="session")
def runtime(schedule_path: Path, contacts_dir: Path, templates_dir: Path) -> Runtime:
    """The shipped campaign with checked templates, loaded once (never mutated)."""
    return Runtime.load(schedule_path, contacts_dir, templates_dir)
