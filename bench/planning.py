"""Figure 3: planning at scale against the I/O floor, and the naive one-job-per-reminder design.

The data: a generated national directory and its whole-campaign submissions history,
COPYed into the ``submissions`` table of a migrated PostgreSQL database.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from service.clock import VirtualClock
from service.planner import PlannedMessage
from service.runtime import Runtime
from service.store.db import create_engine, migrate
from service.store.ledger import Ledger

from .common import Timer, local, pg_connect, pg_url, rss_mb
from .generate import load_submissions_pg

# A busy steady-state window: the month-end overdue reminders and a digest slot.
STEADY_SINCE = local("2023-06-30T09:00")
STEADY_NOW = local("2023-07-03T09:30")


@dataclass
class PlanningFigures:
    rows: int  # submissions rows in the table
    load_seconds: float  # COPY + index (setup, not a figure)
    floor_seconds: float  # SELECT … FROM submissions, fetched with asyncpg (best of two)
    count_table_seconds: float
    plan_seconds: float
    planned: int
    steady_count_seconds: float
    steady_plan_seconds: float
    steady_planned: int
    naive_jobs: int
    naive_seconds: float
    naive_mb: float

    @property
    def cycle_seconds(self) -> float:
        return self.count_table_seconds + self.plan_seconds

    @property
    def steady_seconds(self) -> float:
        return self.steady_count_seconds + self.steady_plan_seconds


async def load_history(database: str, runtime: Runtime) -> tuple[int, float]:
    engine = create_engine(pg_url(database))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    conn = await pg_connect(database)
    try:
        with Timer() as t:
            rows = await load_submissions_pg(conn, runtime.model)
    finally:
        await conn.close()
    return rows, t.seconds


async def io_floor(database: str) -> tuple[float, int]:
    """One plain read of every submissions row, fully fetched (connection already open)."""
    conn = await pg_connect(database)
    try:
        with Timer() as t:
            rows = await conn.fetch("SELECT unit_id, obligation, period, count FROM submissions")
        return t.seconds, len(rows)
    finally:
        await conn.close()


async def _remind(key: str) -> None:  # the naive design's job body (never run here)
    return None


def naive_scheduler(messages: list[PlannedMessage]) -> tuple[float, float]:
    """Seconds and MB to hold one APScheduler DateTrigger job per planned message.

    The scheduler is started paused (inside the running loop) so the jobs go straight into
    its MemoryJobStore, as a running naive daemon's would, without firing.
    """
    scheduler = AsyncIOScheduler(timezone="Asia/Shanghai")
    scheduler.start(paused=True)
    gc.collect()
    before = rss_mb()
    try:
        with Timer() as t:
            for m in messages:
                scheduler.add_job(_remind, DateTrigger(m.due_at), args=[m.key], id=m.key)
        gc.collect()
        grown = rss_mb() - before
    finally:
        scheduler.shutdown(wait=False)
        scheduler.remove_all_jobs()
    return t.seconds, grown


async def planning(database: str, runtime: Runtime) -> PlanningFigures:
    rows, load_seconds = await load_history(database, runtime)
    floors = [await io_floor(database)]
    engine = create_engine(pg_url(database))
    planner = runtime.planner
    end = runtime.timeline.end
    try:
        ledger = Ledger(engine, runtime.model.key, VirtualClock(end))
        # the full catch-up plan: everything since the campaign start, at its end
        with Timer() as t_count:
            counts = await ledger.count_table(runtime.unit_index, as_of=end)
        with Timer() as t_plan:
            plan = planner.plan(counts, None, end)
        floors.append(await io_floor(database))
        # steady state: one cycle at a busy moment
        with Timer() as t_steady_count:
            steady_counts = await ledger.count_table(runtime.unit_index, as_of=STEADY_NOW)
        with Timer() as t_steady_plan:
            steady = planner.plan(steady_counts, STEADY_SINCE, STEADY_NOW)
    finally:
        await engine.dispose()
    del counts, steady_counts
    naive_seconds, naive_mb = naive_scheduler(plan.messages)
    figures = PlanningFigures(
        rows=rows,
        load_seconds=load_seconds,
        floor_seconds=min(s for s, _ in floors),
        count_table_seconds=t_count.seconds,
        plan_seconds=t_plan.seconds,
        planned=len(plan.messages),
        steady_count_seconds=t_steady_count.seconds,
        steady_plan_seconds=t_steady_plan.seconds,
        steady_planned=len(steady.messages),
        naive_jobs=len(plan.messages),
        naive_seconds=naive_seconds,
        naive_mb=naive_mb,
    )
    del plan, steady
    gc.collect()
    return figures


async def set_planned_through(database: str, campaign: str, moment: datetime) -> None:
    """Put the planner's window end where a quiet-moment cycle expects it."""
    conn = await pg_connect(database)
    try:
        await conn.execute(
            "INSERT INTO planner_state (campaign, planned_through, updated_at)"
            " VALUES ($1, $2, $3) ON CONFLICT (campaign) DO UPDATE"
            " SET planned_through = EXCLUDED.planned_through",
            campaign,
            moment,
            moment,
        )
    finally:
        await conn.close()
