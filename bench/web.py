"""Console figures: ``python -m bench.web [--units N]`` (PostgreSQL at 127.0.0.1:5432).

- dashboard server time ÷ one plain ``SELECT obligation, period, count(*) … GROUP BY`` of
  the submissions (target ≤ 3×), both best of 3 in the same run;
- unit page p95 over 200 requests for random units (target ≤ 50 ms);
- 200 concurrent liaison clients (each entered by its own personal link) over HTTP to
  ``service serve`` in its own process, while a daemon cycle in a third process dispatches
  the 2023-06-01 09:00 reminders (one e-mail per liaison) to a local SMTP sink on the same
  database (``--no-dispatch``: without it). Two figures: all 200 pages requested at the same
  instant (a burst: p99 is the time to serve them all, the worst case), and the bounded load
  the target is about (≤ 1 s p99): each client loads its page, reads it for an exponential
  while (mean ``--think`` 10 s), loads it again, for ``--duration`` 60 s.

Timings of each phase (generation, server start, ...) are printed as they finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
from argon2 import PasswordHasher

from service.clock import VirtualClock
from service.runtime import Runtime
from service.store.db import create_engine, migrate
from service.web.app import create_app
from service.web.state import WebSettings

from . import dispatch as daemon
from .common import (
    PYTHON,
    ROOT,
    create_database,
    drop_database,
    local,
    peer,
    percentile,
    pg_connect,
    pg_url,
    settings,
    variant_schedule,
)
from .generate import SCHEDULE, TEMPLATES, load_submissions_pg, write_directory

SECRETS = WebSettings(session_secret="b" * 32, link_secret="c" * 32)


async def _timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        best = min(best, time.perf_counter() - started)
    return best


@contextlib.asynccontextmanager
async def serve_elsewhere(
    contacts: Path, state_dir: Path, database: str, port: int
) -> AsyncIterator[None]:
    """`service serve` in its own process (the clients' CPU is not the server's)."""
    env = {
        **os.environ,
        "SERVICE_WEB_SECRET": SECRETS.session_secret,
        "SERVICE_LINK_SECRET": SECRETS.link_secret,
    }
    argv = [
        sys.executable, "-m", "service", "--schedule", str(SCHEDULE), "--contacts", str(contacts),
        "--templates", str(TEMPLATES), "--state-dir", str(state_dir),
        "--database-url", pg_url(database), "serve", "--port", str(port),
        "--at", "2023-06-26T10:00", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=subprocess.DEVNULL)
    try:
        # loading a 100,000-unit campaign takes the server a minute or two on its own
        deadline = time.monotonic() + 900
        async with httpx.AsyncClient() as probe:
            while True:
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("service serve did not start")
                await asyncio.sleep(0.2)
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def _phase(name: str, started: float) -> None:
    print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)


@contextlib.asynccontextmanager
async def dispatching(
    tmp: Path, contacts: Path, database: str, conn: asyncpg.Connection
) -> AsyncIterator[None]:
    """A daemon cycle (``bench.dispatch.service_cycle``) in its own process, sending one
    reminder e-mail per liaison to a local SMTP sink; yields once it is sending."""
    record = tmp / "sink-accepted.txt"
    record.touch()
    (tmp / "daemon").mkdir(exist_ok=True)
    with peer("bench.smtp_sink", str(record)) as sink:
        channels = daemon.write_channels(tmp / "channels.yaml", sink.port, 1, daemon.POOL_SIZE)
        schedule = variant_schedule(tmp, ["email"])
        argv = [
            PYTHON, "-m", "bench.web", "--daemon", database, "--contacts", str(contacts),
            "--schedule", str(schedule), "--channels", str(channels),
            "--state-dir", str(tmp / "daemon"),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            started = time.perf_counter()
            while not await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'"):
                if proc.returncode is not None:
                    raise RuntimeError("the daemon cycle stopped before sending")
                await asyncio.sleep(0.2)
            _phase("daemon planning until its first message was sent", started)
            yield
            sent = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
            print(f"  messages sent by the daemon so far: {sent}", flush=True)
            if proc.returncode is not None:
                print("  WARNING: the daemon finished during the measurement", flush=True)
        finally:
            if proc.returncode is None:
                proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)


async def daemon_cycle(args: argparse.Namespace) -> None:
    s = settings(
        contacts=args.contacts,
        state_dir=args.state_dir,
        database=args.daemon,
        schedule=args.schedule,
        channels_file=args.channels,
    )
    await daemon.service_cycle(s, args.daemon, daemon.BUSY_MOMENT)


async def run(
    units: int, clients: int, dispatch: bool, think: float = 10.0, duration: float = 60.0
) -> None:
    database = f"bench_web_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        contacts = Path(tmp) / "contacts"
        started = time.perf_counter()
        write_directory(contacts, units)
        runtime = Runtime.load(SCHEDULE, contacts, TEMPLATES)
        _phase("directory written and loaded", started)
        await create_database(database)
        try:
            engine = create_engine(pg_url(database))
            await migrate(engine)
            await engine.dispose()
            conn = await pg_connect(database)
            started = time.perf_counter()
            rows = await load_submissions_pg(conn, runtime.model)
            _phase("submissions generated and loaded", started)
            print(
                f"{units} units, {len(runtime.model.directory.people)} people, {rows} submissions"
            )

            async def group_by() -> None:
                await conn.fetch(
                    "SELECT obligation, period, count(*) FROM submissions"
                    " GROUP BY obligation, period"
                )

            baseline = await _timed(group_by)
            clock = VirtualClock(local("2023-06-26T10:00"))
            s = settings(contacts=contacts, state_dir=Path(tmp), database=database)
            app = create_app(s, clock, web=SECRETS, runtime=runtime)
            state = app.state.web
            cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
            await state.accounts.add_user("bench", "office", None, cheap.hash("bench-password"))
            port = 18000 + os.getpid() % 1000
            started = time.perf_counter()
            async with serve_elsewhere(contacts, Path(tmp), database, port):
                _phase("server started", started)
                base = f"http://127.0.0.1:{port}"
                limits = httpx.Limits(max_connections=clients + 10)
                async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as office:
                    page = await office.get("/login")
                    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                    await office.post(
                        "/login", data={"name": "bench", "password": "bench-password", "csrf": csrf}
                    )

                    async def dashboard() -> None:
                        r = await office.get("/dashboard")
                        assert r.status_code == 200, r.status_code

                    dash = await _timed(dashboard)
                    rng = random.Random(3)
                    ids = list(runtime.model.directory.units)
                    unit_times = []
                    for _ in range(200):
                        started = time.perf_counter()
                        r = await office.get(f"/units/{rng.choice(ids)}")
                        unit_times.append(time.perf_counter() - started)
                        assert r.status_code == 200
                liaisons = [p.id for p in runtime.model.directory.people if p.role == "liaison"]
                chosen = rng.sample(liaisons, min(clients, len(liaisons)))

                entered: list[httpx.AsyncClient] = []
                for pid in chosen:  # everyone enters by their link first ...
                    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
                        await c.get(f"/l/{state.signer.issue(pid, 1, clock.now())}")
                        cookies = dict(c.cookies)
                    # a new connection each: idle keep-alive ones are closed after 5 s
                    entered.append(httpx.AsyncClient(base_url=base, timeout=60, cookies=cookies))

                async def liaison(c: httpx.AsyncClient) -> float:
                    started = time.perf_counter()
                    r = await c.get("/me")
                    assert r.status_code == 200
                    return time.perf_counter() - started

                async def reader(c: httpx.AsyncClient, rng: random.Random) -> list[float]:
                    """One liaison reading their page now and then: load, read for an
                    exponentially distributed while (mean ``think`` s), load again."""
                    times: list[float] = []
                    await asyncio.sleep(rng.uniform(0, think))  # not all in the same instant
                    end = time.perf_counter() + duration
                    while time.perf_counter() < end:
                        times.append(await liaison(c))
                        await asyncio.sleep(rng.expovariate(1 / think))
                    return times

                # ... then all of them load their page at once (a burst: the worst case),
                # and then read it now and then (bounded load), while the daemon dispatches
                async with (
                    dispatching(Path(tmp), contacts, database, conn)
                    if dispatch
                    else contextlib.nullcontext()
                ):
                    liaison_times = await asyncio.gather(*(liaison(c) for c in entered))
                    started = time.perf_counter()
                    bounded = [
                        t
                        for ts in await asyncio.gather(
                            *(reader(c, random.Random(i)) for i, c in enumerate(entered))
                        )
                        for t in ts
                    ]
                    offered = len(bounded) / (time.perf_counter() - started)
                for c in entered:
                    await c.aclose()
            await state.engine.dispose()
            await conn.close()
        finally:
            await drop_database(database)
    print("| figure | measured | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| dashboard server time | {dash * 1000:.0f} ms | GROUP BY {baseline * 1000:.0f} ms"
        f" | {dash / baseline:.1f}× | ≤ 3× |"
    )
    print(f"| unit page p95 | {percentile(unit_times, 95) * 1000:.0f} ms | | | ≤ 50 ms |")
    busy = " (daemon dispatching)" if dispatch else ""
    print(
        f"| {len(chosen)} liaison pages requested at the same instant, p99{busy} |"
        f" {percentile(list(liaison_times), 99) * 1000:.0f} ms | | | (burst, worst case) |"
    )
    print(
        f"| {len(chosen)} concurrent liaison clients, bounded load p99{busy} |"
        f" {percentile(bounded, 99) * 1000:.0f} ms ({len(bounded)} pages,"
        f" {offered:.1f} pages/s; think time {think:.0f} s) | | | ≤ 1 s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--no-dispatch", action="store_true", help="no daemon meanwhile")
    parser.add_argument(
        "--think",
        type=float,
        default=10.0,
        help="bounded load: mean seconds between a client's pages",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="bounded load: seconds each client reads"
    )
    # internal: the daemon cycle's own process (see ``dispatching``)
    parser.add_argument("--daemon", metavar="DATABASE", help=argparse.SUPPRESS)
    parser.add_argument("--contacts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--schedule", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from service.logs import configure

    configure("WARNING")
    if args.daemon:
        asyncio.run(daemon_cycle(args))
    else:
        asyncio.run(run(args.units, args.clients, not args.no_dispatch, args.think, args.duration))


if __name__ == "__main__":
    main()
