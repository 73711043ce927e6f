"""Wiring one process: database, campaign runtime, channels, dispatcher, reconciler."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .channels.base import Channel
from .channels.registry import build_channels, load_channels_config
from .clock import Clock
from .config import Settings
from .cycle import Reconciler
from .dispatcher import Dispatcher, RetryPolicy
from .runtime import Runtime
from .store.db import create_engine, migrate
from .store.ledger import Ledger
from .store.outbox import Outbox


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class App:
    settings: Settings
    runtime: Runtime
    ledger: Ledger
    outbox: Outbox
    reconciler: Reconciler
    channels: Mapping[str, Channel]

    def reload(self) -> Runtime:
        """Re-read schedule, directory and templates; on error the old ones stay."""
        s = self.settings
        runtime = Runtime.load(s.schedule, s.contacts, s.templates)
        self.runtime = runtime
        self.reconciler.swap(runtime)
        return runtime


@asynccontextmanager
async def open_app(
    settings: Settings,
    clock: Clock,
    *,
    channels: Mapping[str, Channel] | None = None,
    policy: RetryPolicy | None = None,
    worker: str | None = None,
    durable_outbox: bool = True,
) -> AsyncIterator[App]:
    runtime = Runtime.load(settings.schedule, settings.contacts, settings.templates)
    owned = channels is None
    if channels is None:
        cfg = load_channels_config(settings.channels_file)
        channels = build_channels(
            cfg,
            settings.state_dir,
            runtime.templates.sms.signature,
            clock=clock.now,
            durable=durable_outbox,
            tz=runtime.model.schedule.campaign.tz,
        )
    engine = create_engine(settings.db_url)
    try:
        await migrate(engine)
        key = runtime.model.key
        ledger = Ledger(engine, key, clock)
        outbox = Outbox(engine, key)
        policy = policy or RetryPolicy(
            concurrency=settings.dispatch_concurrency, unrecorded=settings.dispatch_unrecorded
        )
        dispatcher = Dispatcher(
            runtime, outbox, ledger, channels, clock, worker or worker_id(), policy
        )
        reconciler = Reconciler(runtime, outbox, ledger, dispatcher, clock)
        yield App(settings, runtime, ledger, outbox, reconciler, channels)
    finally:
        if owned:
            for channel in {id(c): c for c in channels.values()}.values():
                await channel.aclose()
        await engine.dispose()
