"""One reconciliation cycle — plan what became due, then dispatch — shared by the daemon,
the simulator and the tests, so all of them run exactly the same code path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import structlog

from .clock import Clock
from .dispatcher import Dispatcher, Stats
from .planner import PlannedMessage
from .runtime import Runtime
from .store.ledger import Ledger
from .store.outbox import Outbox

log = structlog.get_logger("service.cycle")
_INSERT_BATCH = 5_000  # planned messages held in memory before they are inserted


@dataclass
class CycleResult:
    planned: int
    new: int
    stats: Stats


class Reconciler:
    """Owns the planning window and the dispatcher of one process."""

    def __init__(
        self, runtime: Runtime, outbox: Outbox, ledger: Ledger, dispatcher: Dispatcher, clock: Clock
    ) -> None:
        self.runtime = runtime
        self.outbox = outbox
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.clock = clock
        self._lock = asyncio.Lock()  # alarms may overlap; cycles never do

    def swap(self, runtime: Runtime) -> None:
        """Adopt a reloaded schedule/directory/templates between cycles."""
        self.runtime = runtime
        self.dispatcher.runtime = runtime

    async def plan(self) -> tuple[int, int]:
        async with self.outbox.planning_lock():
            return await self._plan()

    async def _plan(self) -> tuple[int, int]:
        now = self.clock.now()
        since = await self.outbox.planned_through()
        end = self.runtime.timeline.end
        if since is None and now >= end:
            log.warning(
                "campaign ended before the service first ran; nothing planned",
                campaign=self.runtime.model.key,
            )
            return 0, 0
        counts = await self.ledger.count_table(self.runtime.unit_index, as_of=now)
        planned = new = 0
        buffer: list[PlannedMessage] = []
        for chunk in self.runtime.planner.iter_plan(counts, since, now):
            buffer += chunk
            if len(buffer) >= _INSERT_BATCH:
                planned, new = planned + len(buffer), new + await self.outbox.insert(buffer, now)
                buffer = []
        if buffer:
            planned, new = planned + len(buffer), new + await self.outbox.insert(buffer, now)
        # Only now is the window done: a crash before this line re-plans it (idempotently).
        await self.outbox.set_planned_through(min(now, end), now)
        return planned, new

    async def run_cycle(self, reason: str = "tick") -> CycleResult:
        async with self._lock:
            planned, new = await self.plan()
            stats = await self.dispatcher.run()
            if new or stats.claimed:
                at = self.clock.now().astimezone(self.runtime.model.schedule.campaign.tz)
                log.info(
                    "cycle",
                    at=at.isoformat(timespec="minutes"),
                    reason=reason,
                    new=new,
                    sent=stats.sent,
                    cancelled=stats.cancelled,
                    stale=stats.stale,
                    failed=stats.failed,
                    retried=stats.retried,
                    deferred=stats.deferred,
                )
            return CycleResult(planned, new, stats)

    async def next_wake(self) -> datetime | None:
        """When something may next be due: a planned moment or a pending retry/wait."""
        now = self.clock.now()
        candidates = [
            t
            for t in (self.runtime.timeline.next_moment(now), await self.outbox.next_attempt_at())
            if t is not None
        ]
        return max(min(candidates), now) if candidates else None
