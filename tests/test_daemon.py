"""The real ``service run`` daemon as a subprocess, plus the wake-up scheduling of a cycle.

The subprocess runs on the real clock, so its schedule is written around today's date
(Asia/Shanghai): a campaign from yesterday to today+30 with

- ``due-tomorrow``: due tomorrow 17:00, reminded one calendar day before at 00:00 — that
  moment (today 00:00) passed before the daemon started, so the start-up catch-up must
  send it whatever the hour the suite runs at;
- ``due-yesterday``: due yesterday 17:00, reminded that day at 00:00 — a pre-deadline
  reminder whose deadline has passed, so it must be recorded stale, never sent.

The safety tick is an hour (``--tick 3600``): after the start-up cycle, only a signal
makes the daemon act, so a reload seen in the log was caused by the SIGHUP sent.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from service.app import open_app
from service.clock import RealClock, VirtualClock
from service.config import Settings
from service.daemon import Daemon
from tests.conftest import SHANGHAI, local
from tests.helpers.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
LIAISONS = 26
START_DEADLINE = 20.0  # seconds: start-up and the first cycle
SIGNAL_DEADLINE = 10.0  # seconds: reaction to a signal, exit after SIGTERM
CYCLE_LINE = re.compile(r"\] cycle\s")  # structlog console line of a cycle
LAST_HOLIDAY_DATA_YEAR = 2026  # chinesecalendar's range; later years are listed as own


def schedule_text(today: date) -> str:
    """A campaign around ``today``, with one due reminder and one stale one."""
    start, end = today - timedelta(days=1), today + timedelta(days=30)
    own = sorted({y for y in (start.year, end.year) if y > LAST_HOLIDAY_DATA_YEAR})
    who = "{kinds: [region, county, department, enterprise]}"
    return f"""\
campaign:
  key: daemon-test
  name: 守护进程测试活动
  timezone: Asia/Shanghai
  start: {start}
  end: {end}
  channels: [email]
  # Any hour, any day: the start-up catch-up must go out whenever the suite runs.
  sending_window: {{start: "00:00", end: "23:59", working_days_only: false}}
  workdays: {{own_years: {own}}}
  contact:
    office: 省安委会办公室
    people: 张帅、刘畅
    phone: "18644975330"
    email: L18644975330@163.com
  digest: {{at: ["09:30"], channels: [email], attachment: none}}
obligations:
  - key: due-tomorrow
    title: 报送明日截止的测试材料
    short_title: 明日测试材料
    who: {who}
    recurrence: {{type: once, date: {today + timedelta(days=1)}}}
    holiday_policy: keep
    reminders:
      - {{days: 1, count: calendar, at: "00:00"}}
  - key: due-yesterday
    title: 报送昨日截止的测试材料
    short_title: 昨日测试材料
    who: {who}
    recurrence: {{type: once, date: {start}}}
    holiday_policy: keep
    reminders:
      - {{days: 0, count: calendar, at: "00:00"}}
"""


def _parse(path: Path) -> Message:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    schedule: Path
    contacts: Path
    state: Path
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def outbox_emails(self) -> list[Path]:
        folder = self.state / "outbox" / "email"
        return sorted(folder.glob("*.eml")) if folder.is_dir() else []

    def rows(self) -> list[dict[str, Any]]:
        """The messages table, read-only, while the daemon runs (empty if not yet created)."""
        db = self.state / "service.db"
        if not db.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                conn.row_factory = sqlite3.Row
                return [dict(r) for r in conn.execute("SELECT * FROM messages")]
            finally:
                conn.close()
        except sqlite3.Error:  # schema not migrated yet
            return []

    def wait_log(self, text: str, count: int = 1, timeout: float = SIGNAL_DEADLINE) -> None:
        wait_until(
            lambda: self.log().count(text) >= count or self.proc.poll() is not None,
            timeout,
            f"{count}× {text!r} in the daemon log",
        )
        assert self.log().count(text) >= count, self.log()

    def started(self) -> None:
        """Wait for the signal handlers and the end of the start-up cycle (its log line)."""
        self.wait_log("daemon started", timeout=START_DEADLINE)
        wait_until(
            lambda: CYCLE_LINE.search(self.log()) or self.proc.poll() is not None,
            START_DEADLINE,
            "the start-up cycle to finish",
        )
        assert self.proc.poll() is None, self.log()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    """``python -m service … run --tick 3600`` on a copy of the contacts, file outbox."""
    today = datetime.now(SHANGHAI).date()
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(schedule_text(today), encoding="utf-8")
    contacts = tmp_path / "contacts"
    shutil.copytree(ROOT / "contacts", contacts)
    state = tmp_path / "state"
    log_file = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--schedule",
        str(schedule),
        "--contacts",
        str(contacts),
        "--templates",
        str(ROOT / "templates"),
        "--state-dir",
        str(state),
        "run",
        "--tick",
        "3600",
    ]
    with log_file.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    running = RunningDaemon(proc, schedule, contacts, state, log_file)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=SIGNAL_DEADLINE)


def test_startup_catch_up_sends_the_reminder_that_fell_due_while_down(
    daemon: RunningDaemon,
) -> None:
    """The reminder due at 00:00 today lands in the file outbox right after start-up."""
    emails = wait_until(
        lambda: daemon.outbox_emails() if len(daemon.outbox_emails()) >= LIAISONS else None,
        START_DEADLINE,
        "26 reminders in the outbox",
    )
    assert len(emails) == LIAISONS
    keys = [str(_parse(p)["X-Campaign-Key"]).strip() for p in emails]
    assert all(k.startswith("daemon-test/") and k.endswith("/email") for k in keys), keys
    sent = [r for r in daemon.rows() if r["obligation"] == "due-tomorrow"]
    assert [r["status"] for r in sent] == ["sent"] * LIAISONS


def test_startup_records_a_passed_pre_deadline_reminder_as_stale(
    daemon: RunningDaemon,
) -> None:
    """The reminder whose deadline passed while down is stale, with a reason, never sent."""
    rows = wait_until(
        lambda: [r for r in daemon.rows() if r["obligation"] == "due-yesterday"],
        START_DEADLINE,
        "the due-yesterday messages to be planned",
    )
    assert len(rows) == LIAISONS
    assert {r["status"] for r in rows} == {"stale"}
    assert all("stopped making sense" in r["reason"] for r in rows)
    daemon.started()
    keys = [str(_parse(p)["X-Campaign-Key"]).strip() for p in daemon.outbox_emails()]
    assert not any(k.endswith("/stale") for k in keys)


def test_sighup_reloads_a_modified_contacts_file(daemon: RunningDaemon) -> None:
    """After the contacts change, SIGHUP makes the running daemon reload its inputs."""
    daemon.started()
    people = daemon.contacts / "people.csv"
    people.write_text(
        people.read_text(encoding="utf-8").replace("李海燕", "李海艳"), encoding="utf-8"
    )
    assert "configuration reloaded" not in daemon.log()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("configuration reloaded")
    assert daemon.proc.poll() is None


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda good: "campaign: [not closed\n", id="yaml-syntax"),
        pytest.param(
            lambda good: re.sub(r"(?m)^  end: .*$", "  end: 2000-01-01", good),
            id="end-before-start",
        ),
    ],
)
def test_sighup_with_a_broken_schedule_is_refused_and_the_daemon_keeps_running(
    daemon: RunningDaemon,
    broken: Callable[[str], str],
) -> None:
    """A broken schedule on SIGHUP is refused and logged; the daemon runs on, then stops cleanly."""
    daemon.started()
    daemon.schedule.write_text(broken(daemon.schedule.read_text(encoding="utf-8")), "utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload refused")
    assert "configuration reloaded" not in daemon.log()
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=SIGNAL_DEADLINE) == 0
    assert "daemon stopped" in daemon.log()


def test_sigterm_stops_the_daemon_with_exit_code_zero(daemon: RunningDaemon) -> None:
    """SIGTERM ends the daemon cleanly (exit 0) within 10 s."""
    daemon.started()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=SIGNAL_DEADLINE) == 0
    assert "daemon stopped" in daemon.log()


class StubScheduler:
    """Records add_job calls the way AsyncIOScheduler would receive them."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def add_job(self, func: Any, trigger: Any = None, **kwargs: Any) -> None:
        self.jobs[kwargs["id"]] = {"func": func, "trigger": trigger, **kwargs}


async def test_cycle_schedules_the_wake_job_at_the_next_due_moment(tmp_path: Path) -> None:
    """After a cycle at 09:05 on 2023-05-18, the single ``wake`` job is set for 09:30."""
    settings = Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    clock = VirtualClock(local("2023-05-18T09:05"))
    async with open_app(settings, clock, durable_outbox=False) as app:
        daemon = Daemon(app)
        scheduler = StubScheduler()
        daemon._scheduler = scheduler  # type: ignore[assignment]
        await daemon.cycle("tick")
    wake = scheduler.jobs["wake"]
    assert isinstance(wake["trigger"], DateTrigger)
    assert wake["trigger"].run_date == local("2023-05-18T09:30")  # the first digest slot
    assert wake["replace_existing"] is True
    assert wake["args"] == ["wake"]


async def test_sighup_while_a_reload_cycle_runs_is_applied_promptly(tmp_path: Path) -> None:
    """A second SIGHUP arriving while the first reload's cycle runs is applied right after it."""
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(schedule_text(datetime.now(SHANGHAI).date()), encoding="utf-8")
    settings = Settings(
        schedule=schedule,
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    async with open_app(settings, RealClock(), durable_outbox=False) as app:
        daemon = Daemon(app, tick=timedelta(hours=1))
        reloads: list[object] = []
        first, second = asyncio.Event(), asyncio.Event()
        reload = app.reload

        def counting_reload() -> Any:
            runtime = reload()
            reloads.append(runtime)
            (first if len(reloads) == 1 else second).set()
            return runtime

        app.reload = counting_reload  # type: ignore[method-assign]
        scheduler = AsyncIOScheduler(
            timezone=SHANGHAI,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        daemon._scheduler = scheduler
        scheduler.start()
        try:
            async with app.reconciler._lock:  # a cycle is busy sending
                daemon._request_reload()  # SIGHUP 1: reloads, then waits for the lock
                async with asyncio.timeout(5):
                    await first.wait()
                daemon._request_reload()  # SIGHUP 2, while that cycle still runs
            async with asyncio.timeout(3):
                await second.wait()
        finally:
            scheduler.shutdown(wait=False)
            daemon.stop.set()
            async with asyncio.timeout(10), app.reconciler._lock:
                pass  # let a cycle still running finish before the app closes
