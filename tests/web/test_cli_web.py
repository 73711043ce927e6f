"""Console commands (SQLite state under tmp_path, like tests/test_cli.py): user add, token
create, link, serve's secret check, and ``run --web`` next to the daemon."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from service.cli import app
from service.clock import VirtualClock
from service.config import Settings
from service.links import LinkError, LinkSigner
from service.store.accounts import Accounts
from service.store.db import create_engine
from tests.conftest import local

ROOT = Path(__file__).resolve().parent.parent.parent
Invoke = Callable[..., Result]
SECRETS = {"SERVICE_WEB_SECRET": "w" * 32, "SERVICE_LINK_SECRET": "k" * 32}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Invoke:
    """``service --state-dir tmp ARGS`` with the shipped campaign and test secrets."""
    for name in ("DATABASE_URL", "CHANNELS_FILE", "STATE_DIR"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    monkeypatch.setenv("SERVICE_SCHEDULE", str(ROOT / "schedules" / "jilin-2023.yaml"))
    monkeypatch.setenv("SERVICE_CONTACTS", str(ROOT / "contacts"))
    monkeypatch.setenv("SERVICE_TEMPLATES", str(ROOT / "templates"))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, ["--state-dir", str(state_dir), *args], input=input)

    return invoke


async def _accounts(state_dir: Path, fn):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite+aiosqlite:///{state_dir / 'service.db'}")
    try:
        return await fn(Accounts(engine, VirtualClock(local("2023-06-26T10:00"))))
    finally:
        await engine.dispose()


def test_user_add_stores_an_argon2_hash(cli: Invoke, state_dir: Path) -> None:
    """`user add --password-stdin` creates the user with an argon2id hash, not the text."""
    r = cli("user", "add", "wang", "--role", "office", "--password-stdin", input="s3cret-pass-1\n")
    assert r.exit_code == 0, r.output
    user = asyncio.run(_accounts(state_dir, lambda acc: acc.user("wang")))
    assert user.role == "office" and user.password_hash.startswith("$argon2id$")
    assert "s3cret-pass-1" not in user.password_hash


def test_user_add_refuses_short_password(cli: Invoke, state_dir: Path) -> None:
    """A short password is refused naming the field; no user is written."""
    r = cli("user", "add", "wang", "--role", "office", "--password-stdin", input="short\n")
    assert r.exit_code == 1 and "password: at least 10 characters" in r.output
    assert not (state_dir / "service.db").exists()


def test_user_add_supervisor_needs_known_scope(cli: Invoke) -> None:
    """A supervisor's scope must be a unit of the directory."""
    r = cli(
        "user",
        "add",
        "li",
        "--role",
        "supervisor",
        "--scope",
        "atlantis",
        "--password-stdin",
        input="long-enough-pw\n",
    )
    assert r.exit_code == 1 and "--scope: unknown unit 'atlantis'" in r.output


def test_token_create_prints_a_working_token_last(cli: Invoke, state_dir: Path) -> None:
    """The token is the last line; only its hash is stored and it resolves to its scope."""
    from service.web.security import token_hash

    r = cli("token", "create", "--role", "supervisor", "--scope", "changchun")
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[-1]
    assert token.startswith("crs_")
    row = asyncio.run(_accounts(state_dir, lambda acc: acc.token(token_hash(token))))
    assert (row.role, row.scope) == ("supervisor", "changchun")


def test_link_prints_a_verifiable_link_and_revoke_invalidates(cli: Invoke) -> None:
    """`service link P` prints /l/TOKEN for P; `--revoke` makes the earlier one stale."""
    first = cli("link", "changchun-liaison")
    assert first.exit_code == 0, first.output
    url = first.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:8080/l/")
    signer = LinkSigner(SECRETS["SERVICE_LINK_SECRET"])
    from datetime import UTC, datetime

    now = datetime.now(UTC)  # the CLI runs on the real clock
    claims = signer.verify(url.rsplit("/", 1)[1], now)
    assert (claims.person, claims.version) == ("changchun-liaison", 1)
    second = cli("link", "changchun-liaison", "--revoke")
    claims2 = signer.verify(second.stdout.strip().splitlines()[-1].rsplit("/", 1)[1], now)
    assert claims2.version == 2


def test_link_unknown_person(cli: Invoke) -> None:
    """An unknown person id is an error naming the argument."""
    r = cli("link", "nobody")
    assert r.exit_code == 1 and "unknown person 'nobody'" in r.output


def test_link_with_foreign_key_is_tampered() -> None:
    """A token from another key is 'tampered' (rotating the key revokes every link)."""
    now = local("2023-06-26T10:00")
    token = LinkSigner("a" * 32).issue("p", 1, now)
    with pytest.raises(LinkError) as exc:
        LinkSigner("b" * 32).verify(token, now)
    assert exc.value.reason == "tampered"


def test_serve_needs_secrets(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SERVICE_WEB_SECRET the console does not start and says which variable."""
    monkeypatch.delenv("SERVICE_WEB_SECRET")
    r = cli("serve")
    assert r.exit_code == 1 and "SERVICE_WEB_SECRET" in r.output


def test_run_web_rejects_bad_address(cli: Invoke) -> None:
    """`run --web` with no port is refused before the daemon starts."""
    r = cli("run", "--web", "localhost")
    assert r.exit_code == 1 and "--web" in r.output and "HOST:PORT" in r.output


async def test_console_alongside_daemon_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve_alongside answers on its port from the daemon's own engine and campaign."""
    from service.app import open_app
    from service.web.server import console_alongside

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = VirtualClock(local("2023-06-26T10:00"))
    async with open_app(settings, clock) as application:
        async with console_alongside(application, f"127.0.0.1:{port}"):
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{port}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
