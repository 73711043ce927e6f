"""The daemon: an alarm clock around the one reconciliation cycle.

APScheduler 3 (AsyncIOScheduler, in-memory job store) only wakes us: a periodic safety
tick, a single ``wake`` job at the next moment something is due, and the digest times.
All state lives in our tables, so missed alarms cost nothing: the next cycle plans
everything that became due meanwhile. A virtual-time variant steps the same cycle from
one due moment to the next (``service run --virtual-from``, ``service simulate``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from .app import App
from .clock import VirtualClock
from .errors import ConfigError
from .metrics import DaemonMetrics
from .statelock import exclusive_state

log = structlog.get_logger("service.daemon")


def _fingerprint(paths: list[Path]) -> tuple[tuple[str, float], ...]:
    """Modification times of every input file, to notice edits without a restart."""
    files: list[Path] = []
    for path in paths:
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(p), p.stat().st_mtime) for p in files if p.exists())


class Daemon:
    def __init__(
        self,
        app: App,
        *,
        tick: timedelta = timedelta(minutes=5),
        grace: float = 20.0,
        before_cycle: Callable[[], Awaitable[None]] | None = None,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        # Work that feeds the ledger before each cycle plans and sends (e.g. the office
        # mailbox): what it records cancels this very cycle's reminders.
        self.before_cycle = before_cycle
        self.tick = tick
        self.grace = grace
        self.stop = asyncio.Event()
        self.reload_requested = False
        self._inputs = [app.settings.schedule, app.settings.contacts, app.settings.templates]
        self._fingerprint = _fingerprint(self._inputs)
        self._scheduler: AsyncIOScheduler | None = None
        self._cycle_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # -- reload ------------------------------------------------------------------------
    def maybe_reload(self) -> bool:
        """Reload on SIGHUP or when an input file changed; keep the old config on errors."""
        current = _fingerprint(self._inputs)
        if not self.reload_requested and current == self._fingerprint:
            return False
        self.reload_requested = False
        self._fingerprint = current
        try:
            self.app.reload()
        except ConfigError as exc:
            log.error(
                "reload refused; keeping the running configuration",
                problems=[str(p) for p in exc.problems],
            )
            return False
        log.info("configuration reloaded")
        self._schedule_digests()
        return True

    # -- one wake-up -------------------------------------------------------------------
    async def cycle(self, reason: str) -> None:
        if self.stop.is_set():
            return
        async with self._lock:  # a reload never swaps the configuration mid-cycle
            self.maybe_reload()
            await _before(self.before_cycle)
            started = time.perf_counter()
            try:
                result = await self.app.reconciler.run_cycle(reason)
            except Exception:  # a broken cycle must not kill the alarm clock
                log.exception("cycle failed; the next tick retries")
                if self.metrics is not None:
                    self.metrics.cycle_failed(time.perf_counter() - started)
            else:
                if self.metrics is not None:
                    self.metrics.cycle_ok(
                        time.perf_counter() - started,
                        self.app.reconciler.clock.now(),
                        result.stats,
                    )
        wake = await self.app.reconciler.next_wake()
        if wake is not None and self._scheduler is not None and not self.stop.is_set():
            self._scheduler.add_job(
                self._run, DateTrigger(wake), args=["wake"], id="wake", replace_existing=True
            )

    async def _run(self, reason: str) -> None:
        task = asyncio.current_task()
        self._cycle_task = task
        try:
            await self.cycle(reason)
        finally:
            if self._cycle_task is task:
                self._cycle_task = None

    def _schedule_digests(self) -> None:
        if self._scheduler is None:
            return
        camp = self.app.runtime.model.schedule.campaign
        for job in self._scheduler.get_jobs():
            if job.id.startswith("digest-"):
                job.remove()
        for at in camp.digest.at:
            self._scheduler.add_job(
                self._run,
                CronTrigger(hour=at.hour, minute=at.minute, timezone=camp.tz),
                args=["digest"],
                id=f"digest-{at:%H%M}",
                replace_existing=True,
            )

    # -- real time ---------------------------------------------------------------------
    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads the inputs."""
        with exclusive_state(self.app.settings.db_url):
            await self._run_until_stopped()

    async def _run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        tz = self.app.runtime.model.schedule.campaign.tz
        scheduler = AsyncIOScheduler(
            timezone=tz,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._scheduler = scheduler
        scheduler.add_job(
            self._run,
            "interval",
            seconds=self.tick.total_seconds(),
            args=["tick"],
            id="tick",
            next_run_time=datetime.now(tz),
        )
        self._schedule_digests()
        scheduler.start()
        log.info(
            "daemon started",
            campaign=self.app.runtime.model.key,
            worker=self.app.reconciler.dispatcher.worker,
        )
        try:
            await self.stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            await self._drain()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("daemon stopped")

    def request_stop(self) -> None:
        log.info("stop requested: finishing in-flight sends")
        self.stop.set()
        self.app.reconciler.dispatcher.stopping.set()

    def _request_reload(self) -> None:
        self.reload_requested = True
        # Not an APScheduler job: with max_instances=1 a one-off job is dropped while a
        # cycle runs. The reconciler's lock already keeps cycles from overlapping.
        task = asyncio.get_running_loop().create_task(self._run("reload"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain(self) -> None:
        task = self._cycle_task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self.grace)
        except TimeoutError:
            # Claims left behind expire with their lease and are retried (same Message-ID).
            log.warning("in-flight sends did not finish within the grace period")


async def _before(work: Callable[[], Awaitable[None]] | None) -> None:
    """The before-cycle work; its failure is logged and the cycle goes on."""
    if work is None:
        return
    try:
        await work()
    except Exception:  # the mailbox being down must not stop the reminders
        log.exception("before-cycle work failed; the cycle goes on")


async def run_virtual(
    app: App,
    clock: VirtualClock,
    until: datetime,
    pace: Callable[[datetime], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    max_cycles: int = 1_000_000,
    before_cycle: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Step the same cycle from one due moment to the next on a virtual clock;
    ``before_cycle`` runs before each cycle as in ``Daemon``."""
    with exclusive_state(app.settings.db_url):
        return await _step_virtual(app, clock, until, pace, stop, max_cycles, before_cycle)


async def _step_virtual(
    app: App,
    clock: VirtualClock,
    until: datetime,
    pace: Callable[[datetime], Awaitable[None]] | None,
    stop: asyncio.Event | None,
    max_cycles: int,
    before_cycle: Callable[[], Awaitable[None]] | None = None,
) -> int:
    cycles = 0
    reconciler = app.reconciler
    while cycles < max_cycles and not (stop and stop.is_set()):
        await _before(before_cycle)
        await reconciler.run_cycle("virtual")
        cycles += 1
        wake = await reconciler.next_wake()
        if wake is None or wake > until or wake <= clock.now():
            break
        if pace is not None:
            await pace(wake)
        clock.set(wake)
    if clock.now() < until:
        clock.set(until)
        await _before(before_cycle)
        await reconciler.run_cycle("virtual-end")
        cycles += 1
    return cycles
