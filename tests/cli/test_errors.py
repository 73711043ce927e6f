"""Issue 12 point 4: a configuration error is one located line; --debug shows the traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .conftest import Invoke, refused


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mysql_url_is_one_line(cli: Invoke) -> None:
    """A mysql:// URL names the option and the supported databases, no ModuleNotFoundError."""
    result = refused(cli("--database-url", "mysql://u:secret@db/x", "status"))
    assert "--database-url" in result.stderr and "postgresql://" in result.stderr
    assert "secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_mysql_url_from_the_environment_names_the_variable(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICE_DATABASE_URL=mysql://… is refused naming the variable."""
    monkeypatch.setenv("SERVICE_DATABASE_URL", "mysql://db/x")
    assert "SERVICE_DATABASE_URL" in refused(cli("status")).stderr


def test_unreachable_database_is_one_line(cli: Invoke) -> None:
    """A PostgreSQL URL nobody listens on gives one line naming the URL, without password."""
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x"
    result = refused(cli("--database-url", url, "status"))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "无法连接数据库" in lines[0], result.stderr
    assert "hunter2" not in result.stderr and "127.0.0.1" in result.stderr


def test_debug_shows_the_traceback(cli: Invoke) -> None:
    """With --debug the same failure raises (the traceback is printed)."""
    url = f"postgresql://u@127.0.0.1:{free_port()}/x"
    result = cli("--debug", "--database-url", url, "status")
    assert result.exit_code == 1 and result.exception is not None
    assert not isinstance(result.exception, SystemExit)


def test_unset_secret_in_channels_file_is_one_line(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run with an SMTP password variable that is not set: one line naming the channels file."""
    monkeypatch.delenv("NO_SUCH_SMTP_PASSWORD", raising=False)
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "email:\n  backend: smtp\n  host: 127.0.0.1\n  port: 2525\n  security: starttls\n"
        "  from_addr: a@example.org\n  username: a\n  password_env: NO_SUCH_SMTP_PASSWORD\n",
        encoding="utf-8",
    )
    result = refused(
        cli(
            "--channels",
            str(channels),
            "run",
            "--virtual-from",
            "2023-06-01T00:00",
            "--until",
            "2023-06-02T00:00",
        )  # fmt: skip
    )
    assert str(channels) in result.stderr and "NO_SUCH_SMTP_PASSWORD" in result.stderr
