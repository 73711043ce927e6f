"""Crash safety with a real subprocess: SIGKILL mid-dispatch, restart, nothing lost.

The worker (tests/helpers/crash_worker.py) sends the 26 liaison-registration reminders of
2023-05-18 09:05 through an SMTP server running in this test's event loop. After
``ACCEPT_FIRST`` messages the server keeps receiving messages but holds its reply to
each; once every pooled connection is held, the worker is killed — the worst moment: the
server has every in-flight message, the worker has committed none of them. A restarted
worker (virtual clock later than the lease) takes the abandoned claims over.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.channels.base import message_id_for
from service.store.tables import messages
from tests.channels.smtp_server import RecordingHandler, running_server

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "helpers" / "crash_worker.py"
CONCURRENCY = 4  # dispatcher concurrency == SMTP pool size
# Messages begun and not yet committed, at most: sends in flight plus accepted ones whose
# result waits for its group commit. The crash window is bounded by this, not CONCURRENCY.
UNRECORDED = 6
ACCEPT_FIRST = 8  # messages answered 250 before the server starts holding replies
LEASE_SECONDS = 30
FIRST_START = "2023-05-18T09:05+08:00"
RESTART = "2023-05-18T09:10+08:00"  # later than FIRST_START + lease: claims are dead
LIAISON_EMAILS = 26
DEADLINE = 30.0  # seconds, for each wait on the subprocess


class HoldingHandler(RecordingHandler):
    """Records every message; after ``accept_first`` holds the replies until released."""

    def __init__(self, accept_first: int, pool: int) -> None:
        super().__init__()
        self.accept_first = accept_first
        self.pool = pool
        self.received: list[tuple[str, str]] = []  # (X-Campaign-Key, Message-ID)
        self.held = 0
        self.release = asyncio.Event()
        self.all_held = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.received.append((str(msg["X-Campaign-Key"]).strip(), str(msg["Message-ID"])))
        if len(self.received) > self.accept_first and not self.release.is_set():
            self.held += 1
            if self.held >= self.pool:
                self.all_held.set()
            await self.release.wait()
        return "250 2.0.0 OK queued"


def _email_only_schedule(tmp_path: Path) -> Path:
    text = (ROOT / "schedules" / "jilin-2023.yaml").read_text(encoding="utf-8")
    assert text.count("  channels: [email, sms]\n") == 1
    path = tmp_path / "schedule.yaml"
    path.write_text(
        text.replace("  channels: [email, sms]\n", "  channels: [email]\n"), encoding="utf-8"
    )
    return path


async def _pg_schema(engine: AsyncEngine) -> str | None:
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        return str((await conn.execute(sa.text("SHOW search_path"))).scalar_one())


async def _start_worker(args: list[str], start: str, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *args,
            "--start",
            start,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )


async def _rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(messages).order_by(messages.c.id))
        return [dict(r._mapping) for r in result]


async def test_sigkill_mid_dispatch_loses_nothing_and_duplicates_only_in_flight(
    tmp_path: Path,
    db_url: str,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGKILL mid-send, restart: none lost, duplicates ≤ in-flight, same Message-ID."""
    handler = HoldingHandler(ACCEPT_FIRST, CONCURRENCY)
    async with running_server(handler) as smtp:
        channels = tmp_path / "channels.yaml"
        channels.write_text(
            "email:\n  backend: smtp\n  host: 127.0.0.1\n"
            f"  port: {smtp.port}\n  security: none\n  from_addr: noreply@example.org\n"
            f"  pool_size: {CONCURRENCY}\n  timeout: 30\n",
            encoding="utf-8",
        )
        args = [
            "--schedule",
            str(_email_only_schedule(tmp_path)),
            "--contacts",
            str(ROOT / "contacts"),
            "--templates",
            str(ROOT / "templates"),
            "--state-dir",
            str(tmp_path / "state"),
            "--channels",
            str(channels),
            "--db-url",
            db_url,
            "--lease-seconds",
            str(LEASE_SECONDS),
            "--concurrency",
            str(CONCURRENCY),
            "--unrecorded",
            str(UNRECORDED),
        ]
        if (schema := await _pg_schema(engine)) is not None:
            args += ["--pg-schema", schema]
        log = tmp_path / "worker.log"

        first = await _start_worker(args, FIRST_START, log)
        try:
            async with asyncio.timeout(DEADLINE):
                await handler.all_held.wait()
        finally:
            first.send_signal(signal.SIGKILL)
            async with asyncio.timeout(DEADLINE):
                await first.wait()
        in_flight = handler.held
        claimed_at_kill = sum(r["status"] == "sending" for r in await _rows(engine))
        handler.release.set()

        second = await _start_worker(args, RESTART, log)
        async with asyncio.timeout(DEADLINE):
            code = await second.wait()
        assert code == 0, log.read_text(encoding="utf-8")

    rows = await _rows(engine)
    by_key = Counter(key for key, _ in handler.received)
    duplicates = {key: n for key, n in by_key.items() if n > 1}
    with capsys.disabled():
        print(
            f"\n[crash {engine.dialect.name}] {len(rows)} planned, "
            f"{len(handler.received)} SMTP deliveries, {len(duplicates)} delivered twice; "
            f"in flight at SIGKILL: {in_flight} sends (concurrency {CONCURRENCY}, "
            f"unrecorded ≤ {UNRECORDED}), "
            f"{claimed_at_kill} claims in state 'sending'"
        )

    assert first.returncode == -signal.SIGKILL
    assert len(rows) == LIAISON_EMAILS
    assert {r["status"] for r in rows} == {"sent"}, Counter(r["status"] for r in rows)
    assert set(by_key) == {r["idem_key"] for r in rows}  # zero lost, nothing unplanned
    assert max(by_key.values()) <= 2
    assert in_flight <= CONCURRENCY
    assert in_flight <= len(duplicates) <= UNRECORDED
    for key in duplicates:
        ids = {mid for k, mid in handler.received if k == key}
        assert ids == {message_id_for(key, "example.org")}
