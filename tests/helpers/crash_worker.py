"""A dispatcher process for the crash tests: open_app + repeated cycles on a virtual clock.

Usage (see tests/test_crash.py)::

    python tests/helpers/crash_worker.py --schedule S --contacts C --templates T \
        --state-dir D --channels CH --db-url URL [--pg-schema NAME] \
        --start 2023-05-18T09:05+08:00 --lease-seconds 30 --concurrency 4

Runs reconciliation cycles until one claims nothing, then exits 0. Every send the
channel accepted is printed as a JSON line ``{"accepted": key}`` (flushed at once), so a
SIGKILL loses nothing of what was printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service import app as app_module  # noqa: E402
from service.app import open_app  # noqa: E402
from service.channels.base import Channel, Envelope, SendResult  # noqa: E402
from service.clock import VirtualClock  # noqa: E402
from service.config import Settings  # noqa: E402
from service.dispatcher import RetryPolicy  # noqa: E402
from service.logs import configure  # noqa: E402
from service.store.db import create_engine  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps({"pid": os.getpid(), **fields}, ensure_ascii=False), flush=True)


class Announcing:
    """Wraps a channel; prints each envelope the peer accepted."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, envelope: Envelope) -> SendResult:
        result = await self.inner.send(envelope)
        emit(accepted=envelope.key)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("schedule", "contacts", "templates", "state-dir", "channels"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--pg-schema", help="PostgreSQL: the schema to use (search_path)")
    p.add_argument("--start", required=True, help="virtual start time, ISO 8601 with offset")
    p.add_argument("--lease-seconds", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--unrecorded", type=int, default=6)
    p.add_argument("--max-cycles", type=int, default=50)
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    if args.pg_schema:
        schema = args.pg_schema

        def engine_in_schema(url: str, **kwargs: Any) -> Any:
            args_ = {"server_settings": {"search_path": schema}}
            return create_engine(url, connect_args=args_, **kwargs)

        app_module.create_engine = engine_in_schema  # type: ignore[assignment]
    settings = Settings(
        schedule=args.schedule,
        contacts=args.contacts,
        templates=args.templates,
        state_dir=args.state_dir,
        channels_file=args.channels,
        database_url=args.db_url,
    )
    clock = VirtualClock(datetime.fromisoformat(args.start))
    policy = RetryPolicy(
        lease=timedelta(seconds=args.lease_seconds),
        concurrency=args.concurrency,
        unrecorded=args.unrecorded,
    )
    # Leases in virtual time: the restart is "later than the lease" on the virtual clock.
    async with open_app(settings, clock, policy=policy, lease_clock=clock) as app:
        dispatcher = app.reconciler.dispatcher
        dispatcher.channels = {k: Announcing(v) for k, v in dispatcher.channels.items()}
        emit(event="started", worker=dispatcher.worker, at=clock.now().isoformat())
        for cycle in range(args.max_cycles):
            result = await app.reconciler.run_cycle("crash-test")
            emit(
                event="cycle",
                cycle=cycle,
                new=result.new,
                claimed=result.stats.claimed,
                sent=result.stats.sent,
                lost_lease=result.stats.lost_lease,
            )
            if result.stats.claimed == 0:
                break
        emit(event="idle", states=await app.outbox.status_counts())


if __name__ == "__main__":
    configure("WARNING")
    asyncio.run(main(parse_args()))
