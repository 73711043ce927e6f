"""Issue 12 point 4: ``service doctor`` checks the whole configuration; exit 1 on failure."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme

from service.config import Settings
from service.doctor import Check, run_checks
from tests.channels.smtp_server import RecordingHandler, password_authenticator, running_server

from .conftest import ROOT, Invoke, ok

NOW = datetime(2023, 6, 20, 1, 0, tzinfo=UTC)


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    payload = json.loads(result.stdout)
    return {c["check"]: c for c in payload["checks"]}


@pytest.fixture
def safe_state(state_dir: Path) -> Path:
    state_dir.mkdir(mode=0o700, parents=True)
    state_dir.chmod(0o700)
    return state_dir


def test_a_sound_configuration_passes(cli: Invoke, safe_state: Path) -> None:
    """The shipped files, a migrated database and a 0700 state folder: all ✓, exit 0."""
    ok(cli("migrate"))
    result = ok(cli("doctor", "--offline"))
    assert "✓ 日程" in result.stdout and "✓ 数据库" in result.stdout
    assert result.stdout.strip().endswith("全部检查通过。")


def test_a_world_readable_state_folder_fails(cli: Invoke, safe_state: Path) -> None:
    """A 0755 state folder is a failure naming the fix; exit 1."""
    ok(cli("migrate"))
    safe_state.chmod(0o755)
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    state = checks_of(result)["state"]
    assert not state["ok"] and "chmod 700" in state["detail"]


def test_an_unmigrated_database_fails(cli: Invoke, safe_state: Path) -> None:
    """A database file without the schema is reported with 'service migrate'."""
    import sqlite3

    sqlite3.connect(safe_state / "service.db").close()
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    assert "service migrate" in checks_of(result)["database"]["detail"]


def test_every_failure_is_listed_at_once(
    cli: Invoke, safe_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken template folder and an unset secret are both reported; no traceback."""
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "email:\n  backend: smtp\n  host: 127.0.0.1\n  port: 2525\n  security: starttls\n"
        "  from_addr: a@example.org\n  username: a\n  password_env: NO_SUCH_PASSWORD\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SERVICE_TEMPLATES", str(tmp_path / "no-templates"))
    result = cli("--channels", str(channels), "doctor", "--offline")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "✗ 渠道配置" in result.stdout and "NO_SUCH_PASSWORD" in result.stdout
    assert "✗ 模板" in result.stdout


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


def smtp_settings(tmp_path: Path, ca: Any, port: int, env: str) -> Settings:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "email:\n  backend: smtp\n  host: 127.0.0.1\n"
        f"  port: {port}\n  security: starttls\n  from_addr: ajw@example.org\n"
        f"  username: ajw\n  password_env: {env}\n  cert_bundle: {bundle}\n",
        encoding="utf-8",
    )
    return Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path / "state",
        channels_file=channels,
    )


def by_key(checks: list[Check]) -> dict[str, Check]:
    return {c.key: c for c in checks}


@pytest.mark.parametrize(("password", "accepted"), [("right", True), ("wrong", False)])
async def test_smtp_login_is_tried(
    tmp_path: Path, ca: Any, monkeypatch: pytest.MonkeyPatch, password: str, accepted: bool
) -> None:
    """Online, doctor logs in to the SMTP server (STARTTLS) and reports a refused password."""
    monkeypatch.setenv("DOCTOR_SMTP_PASSWORD", password)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    handler = RecordingHandler()
    auth = password_authenticator(b"ajw", b"right")
    async with running_server(handler, starttls_context=server_tls, authenticator=auth) as server:
        settings = smtp_settings(tmp_path, ca, server.port, "DOCTOR_SMTP_PASSWORD")
        smtp = by_key(await run_checks(settings, offline=False, now=NOW))["smtp"]
    assert smtp.ok is accepted, smtp.detail
    assert handler.messages.empty()  # nothing is ever sent


async def test_offline_skips_the_network(
    tmp_path: Path, ca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--offline does not connect: a closed port is not a failure, the check says skipped."""
    monkeypatch.setenv("DOCTOR_SMTP_PASSWORD", "x")
    settings = smtp_settings(tmp_path, ca, 1, "DOCTOR_SMTP_PASSWORD")
    smtp = by_key(await run_checks(settings, offline=True, now=NOW))["smtp"]
    assert smtp.ok and smtp.skipped


@pytest.mark.parametrize(
    ("env", "ok", "words"),
    [
        ({}, True, "不附个人链接"),
        ({"SERVICE_LINK_SECRET": "short"}, False, "至少 16 个字符"),
        ({"SERVICE_LINK_SECRET": "s" * 32}, False, "未设置 SERVICE_PUBLIC_URL"),
        (
            {"SERVICE_LINK_SECRET": "s" * 32, "SERVICE_PUBLIC_URL": "http://127.0.0.1:8080"},
            False,
            "本机地址",
        ),
        (
            {"SERVICE_LINK_SECRET": "s" * 32, "SERVICE_PUBLIC_URL": "ftp://aqsc.example.org"},
            False,
            "不是 http(s) 地址",
        ),
        (
            {"SERVICE_LINK_SECRET": "s" * 32, "SERVICE_PUBLIC_URL": "https://aqsc.example.org/"},
            True,
            "https://aqsc.example.org/l/…，45 天内有效",
        ),
    ],
)
def test_personal_links_are_checked(env: dict[str, str], ok: bool, words: str) -> None:
    """doctor's link check: a usable key and an address recipients can reach."""
    from service.doctor import personal_links

    check = personal_links(env)
    assert check.ok is ok and words in check.detail, check
