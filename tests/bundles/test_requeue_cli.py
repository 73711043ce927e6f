"""``service requeue``: failed messages back in the queue, by key, state and time range."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from tests.test_cli import Invoke, ok


def _fail(state_dir: Path, where: str) -> list[str]:
    """Mark some sent messages failed (as an SMTP outage would have); return their keys."""
    with closing(sqlite3.connect(state_dir / "service.db")) as conn, conn:
        keys = [r[0] for r in conn.execute(f"SELECT idem_key FROM messages WHERE {where}")]
        conn.execute(f"UPDATE messages SET status = 'failed', reason = 'gave up' WHERE {where}")
    return keys


def _status(state_dir: Path) -> dict[str, str]:
    with closing(sqlite3.connect(state_dir / "service.db")) as conn:
        return dict(conn.execute("SELECT idem_key, status FROM messages"))


def test_requeue_by_time_range_and_key(cli: Invoke, state_dir: Path) -> None:
    """--from/--to picks failed messages planned in the range; --key picks one; others stay."""
    ok(cli("run", "--virtual-from", "2023-05-18T08:00", "--until", "2023-05-22T10:00"))
    first = _fail(state_dir, "idem_key LIKE 'jilin-2023/2023-05-18T09:00/%'")
    second = _fail(state_dir, "idem_key LIKE 'jilin-2023/2023-05-22T09:00/%'")
    assert first and second
    out = ok(cli("requeue", "--from", "2023-05-18T00:00", "--to", "2023-05-19T00:00")).output
    assert f"已重新排队：{len(first)} 条消息" in out
    status = _status(state_dir)
    assert {status[k] for k in first} == {"pending"}
    assert {status[k] for k in second} == {"failed"}
    ok(cli("requeue", "--key", second[0]))
    status = _status(state_dir)
    assert status[second[0]] == "pending" and {status[k] for k in second[1:]} == {"failed"}


def test_requeue_refuses_states_other_than_failed(cli: Invoke) -> None:
    """Only failed messages may be re-sent: --status sent is refused, naming the option."""
    result = cli("requeue", "--status", "sent")
    assert result.exit_code == 1
    assert "--status" in result.output
