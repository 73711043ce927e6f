"""Fault suite: real local peers that fail on purpose, virtual clocks, loopback only.

Every test runs the shipped campaign at 2023-05-18 09:05 (Asia/Shanghai), when the first
liaison-registration reminder is due: 26 liaisons, one email and one SMS each (52
messages). Each checks that nothing is marked ``sent`` that was not delivered, that
transient failures are retried with visible attempts, and that everything is delivered
once the fault is gone.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import errno
import json
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP
from sqlalchemy.exc import DBAPIError, OperationalError

from service.app import App, open_app
from service.channels.base import ChannelName, Envelope, SendResult, out_id_for
from service.clock import VirtualClock
from service.config import Settings
from service.dispatcher import RetryPolicy
from service.store.tables import delivery_attempts, messages
from tests.channels.smtp_server import RecordingHandler
from tests.helpers.replica_worker import (
    PG,
    PG_URL,
    Wired,
    fresh_pg_schema,
    pg_connect_args,
    wire,
)

START = datetime.fromisoformat("2023-05-18T09:05+08:00")
LIAISONS = 26
WAIT = 30.0  # seconds: upper bound of every wait on a peer or a subprocess
POLL = 0.05


async def poll_until(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """Return the first truthy ``await check()``; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL)


def settings(
    tmp_path: Path, schedule: Path, contacts: Path, templates: Path, channels: str
) -> Settings:
    """SQLite state under ``tmp_path`` and the given channels YAML."""
    path = tmp_path / "channels.yaml"
    path.write_text(channels, encoding="utf-8")
    return Settings(
        schedule=schedule,
        contacts=contacts,
        templates=templates,
        state_dir=tmp_path / "state",
        channels_file=path,
    )


async def attempt_outcomes(engine: Any) -> dict[str, list[tuple[str, str]]]:
    """idem_key -> [(outcome, error)] in the order they were recorded."""
    a, m = delivery_attempts.c, messages.c
    query = (
        sa.select(m.idem_key, a.outcome, a.error)
        .join(messages, m.id == a.message_id)
        .order_by(a.id)
    )
    out: dict[str, list[tuple[str, str]]] = {}
    async with engine.connect() as conn:
        for key, outcome, error in await conn.execute(query):
            out.setdefault(key, []).append((outcome, error))
    return out


async def due_all(app: App | Wired, clock: VirtualClock) -> None:
    """Move the clock to the latest pending retry, so every pending message is due."""
    rows = await app.outbox.rows("pending")
    if rows:
        clock.set(max(clock.now(), *(r["next_attempt_at"] for r in rows)))


# --- a. SMTP server down, then back ------------------------------------------------------


@pytest.fixture
def reserved_socket() -> Iterator[socket.socket]:
    """A bound, not yet listening loopback socket: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def test_smtp_down_then_back_delivers_after_backoff(
    tmp_path: Path,
    schedule_path: Path,
    contacts_dir: Path,
    templates_dir: Path,
    reserved_socket: socket.socket,
) -> None:
    """SMTP refused 3 times (growing backoff, pending), then up: every email sent once."""
    port = reserved_socket.getsockname()[1]
    cfg = settings(
        tmp_path,
        schedule_path,
        contacts_dir,
        templates_dir,
        f"""
email: {{backend: smtp, host: 127.0.0.1, port: {port}, security: none,
         from_addr: noreply@example.org, timeout: 5}}
sms: {{backend: file, folder: {tmp_path / "outbox"}}}
""",
    )
    clock = VirtualClock(START)
    policy = RetryPolicy(base_delay=60.0, max_attempts=6)
    handler = RecordingHandler()
    loop = asyncio.get_running_loop()
    server: asyncio.Server | None = None
    sessions: list[SMTP] = []

    def factory() -> SMTP:
        session = SMTP(handler, hostname="localhost", loop=loop)
        sessions.append(session)
        return session

    try:
        async with open_app(cfg, clock, policy=policy) as app:
            app.reconciler.dispatcher.rng = random.Random(7)
            delays: dict[str, list[float]] = {}
            for attempt in (1, 2, 3):
                await app.reconciler.run_cycle("smtp-down")
                emails = [r for r in await app.outbox.rows() if r["channel"] == "email"]
                assert len(emails) == LIAISONS
                for row in emails:
                    assert (row["status"], row["attempts"]) == ("pending", attempt)
                    assert "SMTP connection problem" in row["reason"]
                    wait = (row["next_attempt_at"] - clock.now()).total_seconds()
                    delays.setdefault(row["idem_key"], []).append(wait)
                await due_all(app, clock)
            for waits in delays.values():
                assert waits[0] < waits[1] < waits[2], waits  # exponential, with jitter
                assert 30 <= waits[0] <= 60 and 120 <= waits[2] <= 240, waits

            server = await loop.create_server(factory, sock=reserved_socket)
            result = await app.reconciler.run_cycle("smtp-back")
            assert result.stats.sent == LIAISONS
            states = Counter(r["status"] for r in await app.outbox.rows())
            assert states == {"sent": 2 * LIAISONS}
            history = await attempt_outcomes(app.outbox.engine)
    finally:
        if server is not None:
            server.close()
            for session in sessions:
                if session.transport is not None:
                    session.transport.close()
            await server.wait_closed()

    received = [handler.messages.get_nowait() for _ in range(handler.messages.qsize())]
    keys = Counter(
        str(email.message_from_bytes(raw, policy=email.policy.default)["X-Campaign-Key"])
        for raw in received
    )
    assert len(keys) == LIAISONS and set(keys.values()) == {1}
    for key, outcomes in history.items():
        if key.endswith("/email"):
            assert [o for o, _ in outcomes] == ["transient"] * 3 + ["sent"], key


# --- b. SMS gateway answering 429 / 500 / nothing in bursts ------------------------------


class FlakyGateway:
    """A tiny HTTP/1.1 server: scripted failures for the first requests, then 200."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.log: list[tuple[str, str]] = []  # (answer, Idempotency-Key)
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FlakyGateway:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.decode("latin-1").partition(":") for line in head.split(b"\r\n")[1:]
                    )
                    if k
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.script.pop(0) if self.script else "200"
                self.log.append((answer, headers.get("idempotency-key", "")))
                if answer == "hang":  # never answer: the client times out and hangs up
                    await reader.read()
                    return
                extra = "Retry-After: 5\r\n" if answer == "429" else ""
                body = json.dumps({"id": f"gw-{len(self.log)}"}).encode()
                writer.write(
                    f"HTTP/1.1 {answer} X\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_sms_gateway_bursts_end_sent_with_retry_after(
    tmp_path: Path, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """Gateway 429 (Retry-After 5) / 500 / timeouts, then 200: all SMS sent, delays honoured."""
    script = ["429", "500", "hang"] * 3
    async with FlakyGateway(script) as gateway:
        cfg = settings(
            tmp_path,
            schedule_path,
            contacts_dir,
            templates_dir,
            f"""
email: {{backend: file, folder: {tmp_path / "outbox"}}}
sms:
  backend: webhook
  url: http://127.0.0.1:{gateway.port}/send
  allow_plaintext: true
  body_template: '{{"to": {{{{ to|tojson }}}}, "text": {{{{ text|tojson }}}}}}'
  provider_id_field: id
  timeout: 0.5
""",
        )
        clock = VirtualClock(START)
        policy = RetryPolicy(base_delay=1.0, max_attempts=6)
        async with open_app(cfg, clock, policy=policy) as app:
            app.reconciler.dispatcher.rng = random.Random(7)
            await app.reconciler.run_cycle("gateway-burst")
            sms = {r["idem_key"]: r for r in await app.outbox.rows() if r["channel"] == "sms"}
            by_out_id = {out_id_for(k): k for k in sms}
            failed = {by_out_id[oid]: answer for answer, oid in gateway.log[: len(script)]}
            assert len(failed) == len(script)
            for key, answer in failed.items():
                row = sms[key]
                assert (row["status"], row["attempts"]) == ("pending", 1), row
                wait = (row["next_attempt_at"] - clock.now()).total_seconds()
                if answer == "429":
                    assert wait >= 5.0, (key, wait)  # Retry-After beats the 1 s backoff
                else:
                    assert wait <= 1.0, (key, wait)
            await due_all(app, clock)
            await app.reconciler.run_cycle("gateway-ok")
            rows = [r for r in await app.outbox.rows() if r["channel"] == "sms"]
            history = await attempt_outcomes(app.outbox.engine)

    assert Counter(r["status"] for r in rows) == {"sent": LIAISONS}
    assert all(r["provider_id"].startswith("gw-") for r in rows)
    accepted = Counter(oid for answer, oid in gateway.log if answer == "200")
    assert len(accepted) == LIAISONS and set(accepted.values()) == {1}
    expected_error = {"429": "HTTP 429", "500": "HTTP 500", "hang": "超时"}
    for key, answer in failed.items():
        (first, error), (second, _) = history[key]
        assert (first, second) == ("transient", "sent")
        assert expected_error[answer] in error, error


# --- c. PostgreSQL connections dropped mid-cycle -----------------------------------------


class Recording:
    """A channel that accepts everything, counts each key, and can run a hook per send."""

    def __init__(self, name: ChannelName, sent: Counter[str]) -> None:
        self.name: ChannelName = name
        self.sent = sent
        self.hook: Callable[[Envelope], Awaitable[None]] | None = None

    async def send(self, envelope: Envelope) -> SendResult:
        self.sent[envelope.key] += 1
        if self.hook is not None:
            await self.hook(envelope)
        return SendResult(provider_id="ok")

    async def aclose(self) -> None:
        """Nothing pooled."""


def recording_channels() -> tuple[dict[str, Recording], Counter[str]]:
    sent: Counter[str] = Counter()
    return {"email": Recording("email", sent), "sms": Recording("sms", sent)}, sent


@pytest.fixture
async def pg_schema(postgres_unreachable: str | None) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema (skipped when the server is unreachable)."""
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    async with fresh_pg_schema("faults") as schema:
        yield schema


async def terminate(app_name: str) -> int:
    """Terminate every backend of ``app_name``; return how many there were."""
    conn = await asyncpg.connect(**PG, timeout=3)
    try:
        return len(
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'test' AND pid <> pg_backend_pid() AND application_name = $1",
                app_name,
            )
        )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_pg_connections_dropped_between_statements_are_replaced(
    pg_schema: str, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """Backends killed while a send is in flight: pre-ping reconnects, each message sent once."""
    app_name = f"faults-{pg_schema[-8:]}"
    channels, sent = recording_channels()
    killed: list[int] = []

    async def drop_connections(envelope: Envelope) -> None:
        if sum(sent.values()) in (5, 30):
            killed.append(await terminate(app_name))

    for channel in channels.values():
        channel.hook = drop_connections
    clock = VirtualClock(START)
    async with wire(
        schedule=schedule_path,
        contacts=contacts_dir,
        templates=templates_dir,
        db_url=PG_URL,
        clock=clock,
        channels=channels,
        worker="faults:c1",
        # No statement in flight while a send runs: one message at a time, recorded first.
        policy=RetryPolicy(concurrency=1, unrecorded=1),
        connect_args=pg_connect_args(pg_schema, app_name),
    ) as app:
        result = await app.reconciler.run_cycle("pg-drop")
        states = await app.outbox.status_counts()
    assert len(killed) == 2 and all(n >= 1 for n in killed), killed
    assert result.stats.sent == 2 * LIAISONS
    assert states == {"sent": 2 * LIAISONS}
    assert len(sent) == 2 * LIAISONS and set(sent.values()) == {1}


@pytest.mark.postgres
async def test_pg_connection_dropped_during_commit_sends_nothing_twice(
    pg_schema: str, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """Backend killed while its 'sent' UPDATE waits: next cycles finish, nothing sent twice."""
    app_name = f"faults-{pg_schema[-8:]}"
    channels, sent = recording_channels()
    side = await asyncpg.connect(**PG, timeout=3, server_settings={"search_path": pg_schema})
    blocked: list[str] = []
    dropper: list[asyncio.Task[None]] = []

    async def block_then_drop(envelope: Envelope) -> None:
        if blocked:
            return
        blocked.append(envelope.key)
        # Hold the row so this message's transition UPDATE waits on the lock ...
        tx = side.transaction()
        await tx.start()
        await side.execute("SELECT 1 FROM messages WHERE idem_key = $1 FOR UPDATE", envelope.key)

        async def drop_when_waiting() -> None:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock'"
            )
            probe = await asyncpg.connect(**PG, timeout=3)
            try:
                await poll_until(
                    lambda: probe.fetchval(waiting, app_name), WAIT, "the UPDATE to wait"
                )
            finally:
                await probe.close()
            await terminate(app_name)  # ... and drop its connection right there
            await tx.rollback()

        dropper.append(asyncio.get_running_loop().create_task(drop_when_waiting()))

    for channel in channels.values():
        channel.hook = block_then_drop
    clock = VirtualClock(START)
    policy = RetryPolicy(concurrency=1, lease=timedelta(minutes=5))
    try:
        async with wire(
            schedule=schedule_path,
            contacts=contacts_dir,
            templates=templates_dir,
            db_url=PG_URL,
            clock=clock,
            channels=channels,
            worker="faults:c2",
            policy=policy,
            connect_args=pg_connect_args(pg_schema, app_name),
        ) as app:
            try:
                await app.reconciler.run_cycle("pg-drop-in-tx")
            except DBAPIError:
                pass  # a clear database error is acceptable; what follows must recover

            async def settled() -> bool:
                states = await app.outbox.status_counts()
                return not states.get("pending") and states.get("sending", 0) <= 1

            await poll_until(settled, WAIT, "the batch to settle")
            clock.set(START + policy.lease + timedelta(seconds=1))
            await app.reconciler.run_cycle("after-lease")
            states = await app.outbox.status_counts()
    finally:
        for task in dropper:
            await asyncio.wait_for(task, WAIT)
        await side.close()
    assert states == {"sent": 2 * LIAISONS}
    assert sent[blocked[0]] == 1, f"{blocked[0]} sent {sent[blocked[0]]} times"
    assert len(sent) == 2 * LIAISONS and set(sent.values()) == {1}


# --- d. SQLite file locked by another process --------------------------------------------

LOCKER = """
import pathlib, sqlite3, sys, time
db, ready, release = sys.argv[1:4]
conn = sqlite3.connect(db, isolation_level=None, timeout=5)
conn.execute("BEGIN EXCLUSIVE")
pathlib.Path(ready).write_text("locked")
deadline = time.monotonic() + 30
while not pathlib.Path(release).exists() and time.monotonic() < deadline:
    time.sleep(0.02)
conn.execute("COMMIT")
"""


class Locker:
    """A subprocess holding ``BEGIN EXCLUSIVE`` on a SQLite file until released."""

    def __init__(self, db: Path, tmp: Path) -> None:
        self.ready = tmp / "locker.ready"
        self.release_file = tmp / "locker.release"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db), str(self.ready), str(self.release_file)]
        )

    async def locked(self) -> None:
        async def check() -> bool:
            assert self.proc.poll() is None, "the locker died"
            return self.ready.exists()

        await poll_until(check, WAIT, "the locker to hold the lock")

    async def release(self) -> None:
        self.release_file.write_text("go")

        async def gone() -> bool:
            return self.proc.poll() is not None

        await poll_until(gone, WAIT, "the locker to commit and exit")
        assert self.proc.returncode == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def test_sqlite_locked_by_another_process_cycle_waits(
    tmp_path: Path, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """A short exclusive lock by another process: the cycle waits for it, then sends all once."""
    cfg = settings(tmp_path, schedule_path, contacts_dir, templates_dir, "{}\n")
    clock = VirtualClock(START)
    async with open_app(cfg, clock) as app:
        await app.outbox.status_counts()  # the file exists and is migrated
        locker = Locker(tmp_path / "state" / "service.db", tmp_path)
        try:
            await locker.locked()
            cycle = asyncio.get_running_loop().create_task(app.reconciler.run_cycle("locked"))
            done, _ = await asyncio.wait({cycle}, timeout=1.0)
            assert not done, "the cycle did not wait for the lock"
            assert not (tmp_path / "state" / "outbox").exists()  # nothing sent meanwhile
            await locker.release()
            result = await asyncio.wait_for(cycle, WAIT)
        finally:
            locker.kill()
        states = await app.outbox.status_counts()
    assert result.stats.sent == 2 * LIAISONS
    assert states == {"sent": 2 * LIAISONS}
    emails = list((tmp_path / "state" / "outbox" / "email").glob("*.eml"))
    sms = (tmp_path / "state" / "outbox" / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(emails) == LIAISONS and len(sms) == LIAISONS


async def test_sqlite_locked_past_busy_timeout_fails_clearly_then_recovers(
    tmp_path: Path, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """A lock longer than the busy timeout: 'database is locked', nothing sent; next cycle ok."""
    db = tmp_path / "service.db"
    channels, sent = recording_channels()
    clock = VirtualClock(START)
    async with wire(
        schedule=schedule_path,
        contacts=contacts_dir,
        templates=templates_dir,
        db_url=f"sqlite+aiosqlite:///{db}",
        clock=clock,
        channels=channels,
        worker="faults:d2",
        policy=RetryPolicy(),
        connect_args={"timeout": 0.3},
    ) as app:
        locker = Locker(db, tmp_path)
        try:
            await locker.locked()
            with pytest.raises(OperationalError, match="database is locked"):
                await app.reconciler.run_cycle("locked")
            assert not sent
            await locker.release()
        finally:
            locker.kill()
        result = await app.reconciler.run_cycle("unlocked")
        states = await app.outbox.status_counts()
    assert result.stats.sent == 2 * LIAISONS
    assert states == {"sent": 2 * LIAISONS}
    assert len(sent) == 2 * LIAISONS and set(sent.values()) == {1}


# --- e. Unwritable outbox folder, full disk ----------------------------------------------


async def run_outbox_fault(
    tmp_path: Path,
    schedule_path: Path,
    contacts_dir: Path,
    templates_dir: Path,
    folder: Path,
    fix: Callable[[], None],
    expected_reason: str,
) -> None:
    """Both channels write to ``folder``: all stay pending, then ``fix()``, all delivered."""
    cfg = settings(
        tmp_path,
        schedule_path,
        contacts_dir,
        templates_dir,
        f"email: {{backend: file, folder: {folder}}}\nsms: {{backend: file, folder: {folder}}}\n",
    )
    clock = VirtualClock(START)
    async with open_app(cfg, clock) as app:
        first = await app.reconciler.run_cycle("disk-fault")
        rows = await app.outbox.rows()
        assert first.stats.sent == 0 and first.stats.retried == 2 * LIAISONS
        for row in rows:
            assert (row["status"], row["attempts"]) == ("pending", 1), row
            assert f"cannot write outbox file {folder}" in row["reason"], row["reason"]
            assert expected_reason in row["reason"], row["reason"]
        fix()
        await due_all(app, clock)
        second = await app.reconciler.run_cycle("disk-fixed")
        states = await app.outbox.status_counts()
    assert second.stats.sent == 2 * LIAISONS
    assert states == {"sent": 2 * LIAISONS}
    assert len(list((folder / "email").glob("*.eml"))) == LIAISONS
    assert not list((folder / "email").glob(".*.tmp"))
    lines = (folder / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert len({json.loads(line)["key"] for line in lines}) == len(lines) == LIAISONS


async def test_outbox_folder_unwritable_stays_pending_then_delivers(
    tmp_path: Path, schedule_path: Path, contacts_dir: Path, templates_dir: Path
) -> None:
    """Outbox under a regular file: pending with a reason naming the path; fixed: delivered."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    await run_outbox_fault(
        tmp_path,
        schedule_path,
        contacts_dir,
        templates_dir,
        blocker / "outbox",
        blocker.unlink,
        "Not a directory",
    )


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs mount permission; skipped otherwise), unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount to simulate a full disk: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mount of a tmpfs not permitted here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


def fill(folder: Path) -> Path:
    """Write one file until the filesystem reports ENOSPC; return its path."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(b"x" * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


async def test_disk_full_stays_pending_then_delivers(
    tmp_path: Path,
    schedule_path: Path,
    contacts_dir: Path,
    templates_dir: Path,
    tiny_tmpfs: Path,
) -> None:
    """Outbox on a full filesystem: pending with ENOSPC named, none sent; space freed: sent."""
    folder = tiny_tmpfs / "outbox"
    folder.mkdir()
    filler = fill(tiny_tmpfs)
    await run_outbox_fault(
        tmp_path,
        schedule_path,
        contacts_dir,
        templates_dir,
        folder,
        filler.unlink,
        "No space left on device",
    )
