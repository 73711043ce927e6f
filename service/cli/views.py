"""Read-only views: calendar, status, overdue, preview, messages."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import render
from ..errors import LedgerError
from ..status import compute_status, overdue_in_scope
from ..store.db import create_engine, migrate
from .commands import app
from .common import Context, run_async, with_ledger


@app.command()
def calendar(ctx: typer.Context, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every occurrence: obligation, period, due moment, kind, units owing it."""

    async def go(state: Context) -> None:
        model = state.model()
        payload = render.calendar_payload(model)
        if json:
            typer.echo(render.dump_json(payload))
            return
        rows = [
            [
                o["due"],
                o["obligation"],
                o["period"],
                o["kind"],
                str(o["units_owing"]),
                "—" if o["kind"] == "event" else f"{o['quota']['min']}/{o['quota']['target']}",
                "顺延/提前" if o["shifted"] else "",
            ]
            for o in payload["occurrences"]
        ]
        render.console().print(
            render.table(
                model.schedule.campaign.name,
                ["截止时间", "事项", "周期", "类型", "应报单位数", "最低/目标", "节假日调整"],
                rows,
            )
        )

    run_async(ctx, go)


@app.command()
def status(
    ctx: typer.Context,
    at: Annotated[
        str | None, typer.Option(help="Moment to evaluate (ISO 8601); default now.")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="Only this unit.")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """For each unit and each open occurrence: done / outstanding / overdue with quota progress."""

    async def go(state: Context) -> None:
        model = state.model()
        if unit is not None and unit not in model.directory.units:
            raise LedgerError(f"--unit: unknown unit {unit!r}")
        moment = state.at(at, model)
        counts = await with_ledger(
            state, model, lambda led: led.count_table(model.unit_index(), as_of=moment)
        )
        rows = compute_status(model, counts, moment, [unit] if unit else None)
        payload = render.status_payload(model, rows, moment)
        if json:
            typer.echo(render.dump_json(payload))
            return
        table_rows = [
            [
                r["unit_name"],
                r["obligation"],
                r["period"],
                r["due"],
                render.STATE_LABEL[r["state"]],
                f"{r['count']}/{r['target']}",
            ]
            for r in payload["rows"]
        ]
        s = payload["summary"]
        render.console().print(
            render.table(
                f"{model.schedule.campaign.name} — {payload['at']}",
                ["单位", "事项", "周期", "截止时间", "状态", "进度"],
                table_rows,
            )
        )
        typer.echo(f"已完成 {s['done']} · 待报送 {s['outstanding']} · 逾期 {s['overdue']}")

    run_async(ctx, go)


@app.command()
def overdue(
    ctx: typer.Context,
    at: Annotated[
        str | None, typer.Option(help="Moment to evaluate (ISO 8601); default now.")
    ] = None,
    scope: Annotated[str | None, typer.Option(help="A unit id: only its subtree.")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Overdue units grouped by obligation, limited to a supervisor's scope."""

    async def go(state: Context) -> None:
        model = state.model()
        if scope is not None and scope not in model.directory.units:
            raise LedgerError(f"--scope: unknown unit {scope!r}")
        moment = state.at(at, model)
        counts = await with_ledger(
            state, model, lambda led: led.count_table(model.unit_index(), as_of=moment)
        )
        payload = render.overdue_payload(
            model, overdue_in_scope(model, counts, moment, scope), moment, scope
        )
        if json:
            typer.echo(render.dump_json(payload))
            return
        out = render.console()
        if not payload["obligations"]:
            typer.echo("没有逾期单位。")
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
            out.print(
                render.table(
                    f"{group['title']}（{len(rows)}）",
                    ["单位", "周期", "截止时间", "已报/最低", "逾期天数"],
                    rows,
                )
            )

    run_async(ctx, go)


@app.command()
def preview(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help="From this moment (default now).")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What goes out next, to whom, and why (nothing is written or sent)."""
    from ..runtime import Runtime

    async def go(state: Context) -> None:
        s = state.settings
        runtime = Runtime.load(s.schedule, s.contacts, s.templates)
        model = runtime.model
        moment = state.at(at, model)
        counts = await with_ledger(
            state, model, lambda led: led.count_table(model.unit_index(), as_of=moment)
        )
        nxt = runtime.timeline.next_moment(moment)
        if nxt is None:
            typer.echo("活动已结束，不再发送任何消息。")
            return
        plan = runtime.planner.plan(counts, moment, nxt)
        rows: list[dict[str, Any]] = [
            {
                "at": render.iso_local(m.next_attempt_at, model),
                "kind": m.kind,
                "channel": m.channel,
                "recipient": m.recipient_id,
                "obligation": m.obligation,
                "periods": list(m.periods),
                "units": list(m.units),
                "status": m.status,
                "key": m.key,
                "why": m.reason or _why(m.kind, m.step),
            }
            for m in plan.messages
        ]
        if json:
            typer.echo(
                render.dump_json(
                    {"campaign": model.key, "next": render.iso_local(nxt, model), "messages": rows}
                )
            )
            return
        typer.echo(f"下一批：{render.iso_local(nxt, model)}，共 {len(rows)} 条")
        render.console().print(
            render.table(
                "",
                ["时间", "类型", "渠道", "收件人", "事项", "原因"],
                [
                    [
                        r["at"],
                        r["kind"],
                        r["channel"],
                        r["recipient"],
                        ", ".join(r["periods"][:3]),
                        r["why"],
                    ]
                    for r in rows
                ],
            )
        )

    run_async(ctx, go)


def _why(kind: str, step: str) -> str:
    return {
        "reminder": f"截止前提醒（{step}）：尚未报送",
        "overdue": f"逾期提醒（{step}）：已过截止时间仍未报送",
        "escalation": f"督办（{step}）：逾期后通知单位负责人",
        "digest": "逾期汇总：辖区内有逾期单位",
        "notice": f"活动通知（{step}）",
    }.get(kind, step)


@app.command()
def messages(
    ctx: typer.Context,
    status_: Annotated[
        str | None, typer.Option("--status", help="pending|sending|sent|cancelled|stale|failed")
    ] = None,
    limit: Annotated[int, typer.Option()] = 50,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The outbox: every message with its state and reason."""

    async def go(state: Context) -> None:
        from ..store.outbox import Outbox

        model = state.model()
        engine = create_engine(state.settings.db_url)
        try:
            await migrate(engine)
            outbox = Outbox(engine, model.key)
            rows = await outbox.rows(status_)
            counts = await outbox.status_counts()
        finally:
            await engine.dispose()
        rows = rows[-limit:]
        if json:
            typer.echo(
                render.dump_json(
                    {
                        "counts": counts,
                        "messages": [
                            {
                                "key": r["idem_key"],
                                "status": r["status"],
                                "reason": r["reason"],
                                "attempts": r["attempts"],
                                "kind": r["kind"],
                                "channel": r["channel"],
                                "due": render.iso_local(r["due_at"], model),
                                "sent_at": render.iso_local(r["sent_at"], model)
                                if r["sent_at"]
                                else None,
                            }
                            for r in rows
                        ],
                    }
                )
            )
            return
        typer.echo(f"按状态统计：{counts}")
        render.console().print(
            render.table(
                "",
                ["状态", "计划时间", "类型", "渠道", "键", "原因"],
                [
                    [
                        r["status"],
                        render.iso_local(r["due_at"], model),
                        r["kind"],
                        r["channel"],
                        r["idem_key"],
                        r["reason"][:60],
                    ]
                    for r in rows
                ],
            )
        )

    run_async(ctx, go)
