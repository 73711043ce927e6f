"""Console figures: ``python -m bench.web [--units N]`` (PostgreSQL at 127.0.0.1:5432).

- dashboard server time ÷ one plain ``SELECT obligation, period, count(*) … GROUP BY`` of
  the submissions (target ≤ 3×), both best of 3 in the same run;
- unit page p95 over 200 requests for random units (target ≤ 50 ms);
- 200 concurrent liaison pages (each client entered by its own personal link) p99 over
  HTTP to an in-process uvicorn (target ≤ 1 s). The daemon is NOT dispatching meanwhile in
  this version of the bench: a stated gap, not a measured claim.
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

import httpx
from argon2 import PasswordHasher

from service.clock import VirtualClock
from service.runtime import Runtime
from service.store.db import create_engine, migrate
from service.web.app import create_app
from service.web.state import WebSettings

from .common import create_database, drop_database, local, percentile, pg_connect, pg_url, settings
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
        async with httpx.AsyncClient() as probe:
            for _ in range(600):
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("service serve did not start")
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def run(units: int, clients: int) -> None:
    database = f"bench_web_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        contacts = Path(tmp) / "contacts"
        write_directory(contacts, units)
        runtime = Runtime.load(SCHEDULE, contacts, TEMPLATES)
        await create_database(database)
        try:
            engine = create_engine(pg_url(database))
            await migrate(engine)
            await engine.dispose()
            conn = await pg_connect(database)
            rows = await load_submissions_pg(conn, runtime.model)
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
            async with serve_elsewhere(contacts, Path(tmp), database, port):
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

                # ... then all of them load their page at once
                liaison_times = await asyncio.gather(*(liaison(c) for c in entered))
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
    print(
        f"| {len(chosen)} concurrent liaison pages p99 |"
        f" {percentile(list(liaison_times), 99) * 1000:.0f} ms | | | ≤ 1 s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    from service.logs import configure

    configure("WARNING")
    asyncio.run(run(args.units, args.clients))


if __name__ == "__main__":
    main()
