"""Read-only views of the campaign and the ledger: calendar, status, overdue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import render
from ..counts import CountTable
from ..status import completion_moments, compute_status, overdue_in_scope
from ..store.ledger import Ledger
from ..store.queries import submission_moments
from .commands import app
from .common import Context, print_table, run_async, say, with_engine, with_ledger
from .i18n import KIND, help_text, t, word
from .i18n import state as state_word

Key = tuple[str, str, str]


@app.command(help=help_text("cmd.calendar"))
def calendar(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        payload = render.calendar_payload(model)
        if json:
            say(render.dump_json(payload))
            return
        rows = [
            [
                o["due"],
                o["obligation"],
                o["period"],
                word(KIND, o["kind"]),
                str(o["units_owing"]),
                "—" if o["kind"] == "event" else f"{o['quota']['min']}/{o['quota']['target']}",
                t("shifted") if o["shifted"] else "",
            ]
            for o in payload["occurrences"]
        ]
        print_table(model.schedule.campaign.name, t("calendar_cols").split("|"), rows)

    run_async(ctx, go)


@app.command(help=help_text("cmd.status"))
def status(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help=help_text("opt.at"))] = None,
    unit: Annotated[str | None, typer.Option(help=help_text("opt.unit"))] = None,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        unit_id = state.unit(unit, model) if unit is not None else None
        moment = state.at(at, model)
        units = [unit_id] if unit_id else None

        async def read(engine: AsyncEngine) -> tuple[CountTable, dict[Key, datetime]]:
            ledger = Ledger(engine, model.key, state.clock)
            counts = await ledger.count_table(model.unit_index(), as_of=moment)
            moments = await submission_moments(engine, model.key, moment, units)
            return counts, completion_moments(model, moments)

        counts, completed = await with_engine(state, read)
        rows = compute_status(model, counts, moment, units, completed)
        payload = render.status_payload(model, rows, moment)
        if json:
            say(render.dump_json(payload))
            return
        table_rows = [
            [
                r["unit_name"],
                r["obligation"],
                r["period"],
                r["due"],
                state_word(r["state"]) + note(r),
                f"{r['count']}/{r['target']}" + (" " + t("over") if r["over_count"] else ""),
            ]
            for r in payload["rows"]
        ]
        s = payload["summary"]
        print_table(
            f"{model.schedule.campaign.name} — {payload['at']}",
            t("status_cols").split("|"),
            table_rows,
        )
        late = sum(1 for r in payload["rows"] if r["late_days"])
        over = sum(1 for r in payload["rows"] if r["over_count"])
        say(t("status_summary", **s, late=late, over=over))

    run_async(ctx, go)


def note(row: dict[str, object]) -> str:
    """补报 (done late) with its days late."""
    days = row.get("late_days")
    return f"（{t('late', days=days)}）" if days else ""


@app.command(help=help_text("cmd.overdue"))
def overdue(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help=help_text("opt.at"))] = None,
    scope: Annotated[str | None, typer.Option(help=help_text("opt.scope"))] = None,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        scope_id = state.unit(scope, model, "--scope") if scope is not None else None
        moment = state.at(at, model)
        counts = await with_ledger(
            state, model, lambda led: led.count_table(model.unit_index(), as_of=moment)
        )
        payload = render.overdue_payload(
            model, overdue_in_scope(model, counts, moment, scope_id), moment, scope_id
        )
        if json:
            say(render.dump_json(payload))
            return
        if not payload["obligations"]:
            say(t("no_overdue"))
        for group in payload["obligations"]:
            rows = [
                [
                    u["unit_name"],
                    u["period"],
                    u["due"],
                    f"{u['count']}/{u['min']}",
                    str(u["days_late"]),
                ]
                for u in group["units"]
            ]
            print_table(f"{group['title']}（{len(rows)}）", t("overdue_cols").split("|"), rows)

    run_async(ctx, go)
