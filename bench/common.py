"""Shared benchmark plumbing: PostgreSQL databases, helper processes, settings, clocks."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from service.config import Settings

from .generate import SCHEDULE, TEMPLATES

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}
SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(text: str) -> datetime:
    """An aware datetime in the campaign's zone from ``YYYY-MM-DDTHH:MM``."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{database}"


async def pg_connect(database: str | None = None) -> asyncpg.Connection:
    params = dict(PG)
    if database:
        params["database"] = database
    return await asyncpg.connect(**params, timeout=10)  # type: ignore[arg-type]


async def create_database(name: str) -> None:
    """A fresh database in the shared cluster (a plain URL reaches it from subprocesses)."""
    conn = await pg_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await pg_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def variant_schedule(folder: Path, channels: list[str]) -> Path:
    """The shipped schedule with other default channels (a schedule is data)."""
    text = SCHEDULE.read_text(encoding="utf-8")
    old = "  channels: [email, sms]\n"
    assert text.count(old) == 1, "the shipped schedule changed: update bench/common.py"
    path = folder / f"schedule-{'-'.join(channels)}.yaml"
    # The firing-lateness figure runs on the real clock at whatever hour the bench runs:
    # e-mail may go out at any hour here (the shipped window would defer it to 08:00).
    always = (
        '  sending_windows: {email: {start: "00:00", end: "23:59", working_days_only: false}}\n'
    )
    path.write_text(text.replace(old, f"  channels: [{', '.join(channels)}]\n{always}"), "utf-8")
    return path


def settings(
    *,
    contacts: Path,
    state_dir: Path,
    database: str | None = None,
    schedule: Path = SCHEDULE,
    channels_file: Path | None = None,
) -> Settings:
    return Settings(
        schedule=schedule,
        contacts=contacts,
        templates=TEMPLATES,
        state_dir=state_dir,
        database_url=pg_url(database) if database else None,
        channels_file=channels_file,
    )


@dataclass
class Peer:
    """A helper server in its own process, listening on ``port``."""

    proc: subprocess.Popen[str]
    port: int


@contextmanager
def peer(module: str, *args: str) -> Iterator[Peer]:
    """Start ``python -m module args``; it prints its port first; SIGTERM it afterwards."""
    proc = subprocess.Popen(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"{module} did not start (said {line!r})")
        yield Peer(proc, int(line))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None  # exiting: the memory map is gone


def peak_rss_mb(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a child to completion: (peak RSS in MB, wall seconds, its stdout).

    The peak is the child's own VmHWM, polled every 10 ms until it exits (a high-water
    mark, so any read after the peak sees it). ``wait4``'s ru_maxrss is no use here: Linux
    carries the pre-exec high-water mark over exec, i.e. this (large) process's RSS.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Collect the output in threads so a chatty child never blocks on a full pipe.
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read())),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read())),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    peak = 0.0
    while proc.poll() is None:
        hwm = _vm_hwm_mb(proc.pid)
        if hwm is not None:
            peak = max(peak, hwm)
        time.sleep(0.01)
    wall = time.perf_counter() - started
    for r in readers:
        r.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{''.join(err)[-3000:]}")
    return peak, wall, "".join(out)


def rss_mb() -> float:
    """This process's current resident set (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


async def wait_until(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``predicate()`` until it is true (for files written by helper processes)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)
