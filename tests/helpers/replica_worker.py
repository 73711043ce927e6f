"""One replica of the service for the replica tests: the pieces of ``open_app`` on a PG schema.

Usage (see tests/test_replicas.py)::

    python tests/helpers/replica_worker.py --name r0 --schedule S --contacts C \
        --templates T --db-url URL --schema NAME --clock-file F --receipts-dir D \
        --lease-seconds 60 --batch 50 --concurrency 8 --unrecorded 16 --deadline 120

``open_app`` takes no engine options, and asyncpg cannot select a schema from the URL
(``search_path`` is a server setting, passed as ``connect_args``), so :func:`wire` builds
the same objects ``open_app`` builds (Runtime, engine, migrate, Ledger, Outbox,
Dispatcher, Reconciler) with an engine whose connections use the given schema.

The virtual clock follows ``--clock-file`` (an ISO 8601 moment the test moves forward):
every replica reads it before each cycle, so they share one virtual "wall clock".

Every envelope the counting channel accepts is appended as ``key<TAB>pid`` to
``<receipts-dir>/receipts-<pid>.log`` with one ``write`` and an ``fsync`` before ``send``
returns: the provider's receipt log, which a SIGKILL cannot lose.

Runs cycles until no message of the campaign is ``pending`` or ``sending``; exits 0, or
3 when ``--deadline`` (seconds) passes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import write_directory  # noqa: E402  (re-exported for the tests)
from service.channels.base import Channel, ChannelName, Envelope, SendResult  # noqa: E402
from service.clock import Clock, VirtualClock  # noqa: E402
from service.cycle import Reconciler  # noqa: E402
from service.dispatcher import Dispatcher, RetryPolicy  # noqa: E402
from service.logs import configure  # noqa: E402
from service.runtime import Runtime  # noqa: E402
from service.store.db import create_engine, migrate  # noqa: E402
from service.store.ledger import Ledger  # noqa: E402
from service.store.outbox import Outbox  # noqa: E402

__all__ = [
    "PG_URL",
    "ReceiptChannel",
    "Wired",
    "fresh_pg_schema",
    "pg_connect_args",
    "wire",
    "write_directory",
]

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

IDLE_POLL = 0.05  # seconds between idle cycles; only inside the --deadline loop


@dataclass
class Wired:
    runtime: Runtime
    outbox: Outbox
    ledger: Ledger
    dispatcher: Dispatcher
    reconciler: Reconciler


@asynccontextmanager
async def fresh_pg_schema(prefix: str) -> AsyncIterator[str]:
    """A new empty schema in database ``test`` (dropped on exit)."""
    schema = f"{prefix}_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(**PG, timeout=3)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(**PG, timeout=3)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


def pg_connect_args(schema: str, application_name: str | None = None) -> dict[str, Any]:
    """asyncpg ``connect_args`` selecting ``schema`` (and naming the connections)."""
    settings = {"search_path": schema}
    if application_name:
        settings["application_name"] = application_name
    return {"server_settings": settings}


@asynccontextmanager
async def wire(
    *,
    schedule: Path,
    contacts: Path,
    templates: Path,
    db_url: str,
    clock: Clock,
    channels: Mapping[str, Channel],
    worker: str,
    policy: RetryPolicy,
    connect_args: dict[str, Any] | None = None,
) -> AsyncIterator[Wired]:
    """What ``service.app.open_app`` builds, with engine ``connect_args``."""
    runtime = Runtime.load(schedule, contacts, templates)
    engine = create_engine(db_url, connect_args=connect_args or {})
    try:
        await migrate(engine)
        key = runtime.model.key
        ledger = Ledger(engine, key, clock)
        outbox = Outbox(engine, key, lease_clock=clock)  # leases in the shared virtual time
        dispatcher = Dispatcher(runtime, outbox, ledger, channels, clock, worker, policy)
        reconciler = Reconciler(runtime, outbox, ledger, dispatcher, clock)
        yield Wired(runtime, outbox, ledger, dispatcher, reconciler)
    finally:
        await engine.dispose()


class ReceiptChannel:
    """Accepts everything; logs each accepted key durably before returning."""

    def __init__(self, name: ChannelName, fd: int) -> None:
        self.name: ChannelName = name
        self._fd = fd

    async def send(self, envelope: Envelope) -> SendResult:
        os.write(self._fd, f"{envelope.key}\t{os.getpid()}\n".encode())
        os.fsync(self._fd)
        return SendResult(provider_id=f"receipt-{os.getpid()}")

    async def aclose(self) -> None:
        """The test reads the log; the fd is closed when the process ends."""


def read_clock(path: Path) -> datetime:
    return datetime.fromisoformat(path.read_text(encoding="utf-8").strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="replica name; worker id is NAME:PID")
    for name in ("schedule", "contacts", "templates", "clock-file", "receipts-dir"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--schema", required=True, help="PostgreSQL schema (search_path)")
    p.add_argument("--lease-seconds", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--unrecorded", type=int, default=32)
    p.add_argument("--deadline", type=float, default=120.0)
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.deadline
    worker = f"{args.name}:{os.getpid()}"
    clock = VirtualClock(read_clock(args.clock_file))
    fd = os.open(
        args.receipts_dir / f"receipts-{os.getpid()}.log",
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o644,
    )
    channels: dict[str, Channel] = {
        "email": ReceiptChannel("email", fd),
        "sms": ReceiptChannel("sms", fd),
    }
    policy = RetryPolicy(
        lease=timedelta(seconds=args.lease_seconds),
        batch=args.batch,
        concurrency=args.concurrency,
        unrecorded=args.unrecorded,
    )
    async with wire(
        schedule=args.schedule,
        contacts=args.contacts,
        templates=args.templates,
        db_url=args.db_url,
        clock=clock,
        channels=channels,
        worker=worker,
        policy=policy,
        connect_args=pg_connect_args(args.schema, f"replica-{args.name}"),
    ) as app:
        print(f"started {worker}", flush=True)
        while time.monotonic() < deadline:
            shared = read_clock(args.clock_file)
            if shared > clock.now():
                clock.set(shared)
            result = await app.reconciler.run_cycle("replica-test")
            states = await app.outbox.status_counts()
            if not states.get("pending") and not states.get("sending"):
                print(f"done {worker} {states}", flush=True)
                return 0
            if result.stats.claimed == 0:
                await asyncio.sleep(IDLE_POLL)  # others hold the rest; poll the DB again
    print(f"deadline passed {worker}", flush=True)
    return 3


if __name__ == "__main__":
    configure("WARNING")
    sys.exit(asyncio.run(main(parse_args())))
