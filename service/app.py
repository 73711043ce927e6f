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
from .links import person_links_from_env
from .logs import set_zone as set_log_zone
from .runtime import Runtime
from .store.accounts import Accounts
from .store.db import create_engine, migrate
from .store.ledger import Ledger
from .store.limits import fit
from .store.outbox import Outbox
from .store.recording import WORKER_CHARS


def worker_id(hostname: str | None = None, pid: int | None = None) -> str:
    """``hostname:pid``, always within the schema's worker columns (64 characters).

    A legal hostname can be 63 characters (253 as an FQDN): a long one is shortened to a
    prefix and a hash of the whole name, so workers on different hosts stay distinct.
    """
    host = socket.gethostname() if hostname is None else hostname
    suffix = f":{os.getpid() if pid is None else pid}"
    return fit(host, WORKER_CHARS - len(suffix)) + suffix


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
        runtime = Runtime.load(s.schedule, s.contacts, s.templates, s.render_limits)
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
    lease_clock: Clock | None = None,
) -> AsyncIterator[App]:
    """Wire one process. Leases follow ``lease_clock``: the wall clock unless given."""
    runtime = Runtime.load(
        settings.schedule, settings.contacts, settings.templates, settings.render_limits
    )
    set_log_zone(runtime.model.schedule.campaign.tz)
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
        outbox = Outbox(engine, key, lease_clock=lease_clock)
        policy = policy or RetryPolicy(
            concurrency=settings.dispatch_concurrency, unrecorded=settings.dispatch_unrecorded
        )
        dispatcher = Dispatcher(
            runtime,
            outbox,
            ledger,
            channels,
            clock,
            worker or worker_id(),
            policy,
            links=person_links_from_env(Accounts(engine, clock)),
        )
        reconciler = Reconciler(runtime, outbox, ledger, dispatcher, clock)
        yield App(settings, runtime, ledger, outbox, reconciler, channels)
    finally:
        if owned:
            for channel in {id(c): c for c in channels.values()}.values():
                await channel.aclose()
        await engine.dispose()
