"""Operations endpoints: liveness, readiness (database and migrations), Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from ..store.db import MIGRATIONS, current_revision
from .auth import public
from .state import WebState, state_of

router = APIRouter(include_in_schema=False)


def migration_heads() -> set[str]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return set(ScriptDirectory.from_config(cfg).get_heads())


def register_metrics(state: WebState) -> None:
    """Gauges on the app's own registry (several apps in one process never collide)."""
    reg = state.registry
    state.gauges = {
        "messages": Gauge(
            "service_messages",
            "Messages in the outbox by state and channel",
            ["state", "channel"],
            registry=reg,
        ),
        "pending": Gauge("service_outbox_pending", "Messages waiting to be sent", registry=reg),
        "last_cycle": Gauge(
            "service_last_cycle_timestamp_seconds",
            "When a reconciliation cycle last finished planning (Unix time)",
            registry=reg,
        ),
        "attempts": Gauge(
            "service_delivery_attempts",
            "Delivery attempts by outcome (sent, transient, permanent, …)",
            ["outcome"],
            registry=reg,
        ),
        "attempt_seconds": Gauge(
            "service_delivery_attempt_seconds_sum",
            "Total time spent in delivery attempts by outcome; divide by the count for latency",
            ["outcome"],
            registry=reg,
        ),
        "lag": Gauge(
            "service_planner_lag_seconds",
            "How far the planned window trails the clock (large: cycles are not running)",
            registry=reg,
        ),
        "failed": Gauge(
            "service_channel_failed_messages",
            "Messages that failed for good, by channel",
            ["channel"],
            registry=reg,
        ),
    }


@router.get("/healthz")
async def healthz(who: Annotated[None, Depends(public)]) -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, who: Annotated[None, Depends(public)]) -> Response:
    state = state_of(request)
    try:
        await state.queries.ping()
        revision = await current_revision(state.engine)
    except Exception as exc:  # any database failure means "not ready", with its kind
        return JSONResponse({"status": "数据库不可用", "error": type(exc).__name__}, 503)
    heads = migration_heads()
    if revision not in heads:
        return JSONResponse(
            {"status": "数据库结构未迁移到最新", "revision": revision, "heads": sorted(heads)}, 503
        )
    return JSONResponse({"status": "ok", "revision": revision})


@router.get("/metrics")
async def metrics(request: Request, who: Annotated[None, Depends(public)]) -> Response:
    state = state_of(request)
    gauges = state.gauges
    by_state = await state.queries.messages_by_state_channel()
    gauges["messages"].clear()
    gauges["failed"].clear()
    pending = 0
    for (status, channel), n in by_state.items():
        gauges["messages"].labels(status, channel).set(n)
        if status == "pending":
            pending += n
        if status == "failed":
            gauges["failed"].labels(channel).set(n)
    gauges["pending"].set(pending)
    gauges["attempts"].clear()
    gauges["attempt_seconds"].clear()
    for outcome, (count, seconds) in (await state.queries.attempts_by_outcome()).items():
        gauges["attempts"].labels(outcome).set(count)
        gauges["attempt_seconds"].labels(outcome).set(seconds)
    planned = await state.queries.planned_through()
    gauges["lag"].set((state.clock.now() - planned).total_seconds() if planned else 0)
    last = await state.queries.last_cycle()
    gauges["last_cycle"].set(last.timestamp() if last else 0)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
