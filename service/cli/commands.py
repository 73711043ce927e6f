"""The core ``service`` commands: validate, calendar, ledger, status, run, simulate, messages."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from .. import render
from ..clock import Clock, RealClock
from ..config import Settings
from ..errors import ConfigError, LedgerError
from ..model import CampaignModel, load_model
from ..status import compute_status, overdue_in_scope
from ..store.db import create_engine, migrate
from ..store.ledger import Ledger
from ..submissions import NewSubmission, check, load_submissions_csv, parse_time

app = typer.Typer(
    help="Campaign calendar, submissions ledger and reminders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    clock: Clock

    def model(self) -> CampaignModel:
        return load_model(self.settings.schedule, self.settings.contacts)

    def at(self, text: str | None, model: CampaignModel) -> datetime:
        if text is None:
            return self.clock.now()
        try:
            return parse_time(text, model.schedule.campaign.timezone)
        except ValueError:
            fail(f"--at: not an ISO 8601 time: {text!r} (e.g. 2023-06-26T09:00+08:00)")
            raise  # unreachable; keeps type checkers happy


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"错误 / error: {message}", err=True)
    raise typer.Exit(code)


def run_async(ctx: typer.Context, fn: Callable[[Context], Coroutine[Any, Any, T]]) -> T:
    state: Context = ctx.obj
    try:
        return asyncio.run(fn(state))
    except ConfigError as exc:
        typer.echo(f"{len(exc.problems)} problem(s):", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    except LedgerError as exc:
        fail(str(exc))
        raise


async def with_ledger(
    state: Context, model: CampaignModel, fn: Callable[[Ledger], Awaitable[T]]
) -> T:
    engine = create_engine(state.settings.db_url)
    try:
        await migrate(engine)
        return await fn(Ledger(engine, model.key, state.clock))
    finally:
        await engine.dispose()


@app.callback()
def main_options(
    ctx: typer.Context,
    schedule: Annotated[
        Path | None, typer.Option(help="Schedule YAML [env SERVICE_SCHEDULE].")
    ] = None,
    contacts: Annotated[
        Path | None, typer.Option(help="Directory folder [env SERVICE_CONTACTS].")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="Templates folder [env SERVICE_TEMPLATES].")
    ] = None,
    channels: Annotated[
        Path | None, typer.Option(help="Channels YAML (SMTP/SMS) [env SERVICE_CHANNELS_FILE].")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder [env SERVICE_STATE_DIR].")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Database URL (default SQLite in the state folder) [env SERVICE_DATABASE_URL]."
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Messages sent at once [8, env SERVICE_DISPATCH_CONCURRENCY]."
        ),
    ] = None,
    unrecorded: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10_000,
            help="Sent but not yet recorded, at most: bounds resends after a crash "
            "[32, env SERVICE_DISPATCH_UNRECORDED].",
        ),
    ] = None,
) -> None:
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "schedule": schedule,
            "contacts": contacts,
            "templates": templates,
            "channels_file": channels,
            "state_dir": state_dir,
            "database_url": database_url,
            "dispatch_concurrency": concurrency,
            "dispatch_unrecorded": unrecorded,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # e.g. SERVICE_DISPATCH_CONCURRENCY=0
        for error in exc.errors(include_url=False):
            name = "SERVICE_" + ".".join(str(p) for p in error["loc"]).upper()
            fail(f"{name}: {error['msg']}")
        raise typer.Exit(1) from None
    ctx.obj = Context(settings, RealClock())


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the schedule, the directory and the templates; list every located problem."""

    async def go(state: Context) -> None:
        model = state.model()
        from ..templates import check_templates

        check_templates(model, state.settings.templates)
        for warning in model.warnings():
            typer.echo(f"警告 / warning: {warning}", err=True)
        n_sub = len(model.submittable())
        typer.echo(
            f"OK: {model.key}: {len(model.schedule.obligations)} obligations, "
            f"{len(model.occurrences)} occurrences ({n_sub} to submit), "
            f"{len(model.directory.units)} units, {len(model.directory.people)} people"
        )

    run_async(ctx, go)


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
def submit(
    ctx: typer.Context,
    unit: Annotated[str, typer.Option(help="Unit id.")],
    obligation: Annotated[str, typer.Option(help="Obligation key.")],
    period: Annotated[str, typer.Option(help="Period key, e.g. 2023-W25 or 2023-07.")],
    count: Annotated[int, typer.Option(min=1)] = 1,
    at: Annotated[str | None, typer.Option(help="When it was submitted (ISO 8601).")] = None,
    source: Annotated[
        str, typer.Option(help="admin | liaison-link | import | inbound-mail")
    ] = "admin",
    actor: Annotated[str, typer.Option(help="Who records it.")] = "cli",
) -> None:
    """Record a submission."""

    async def go(state: Context) -> None:
        model = state.model()
        check(model, unit, obligation, period, count)
        from ..submissions import SOURCES

        if source not in SOURCES:
            raise LedgerError(f"source: must be one of {', '.join(SOURCES)}")
        sub = NewSubmission(unit, obligation, period, count, state.at(at, model), source)  # type: ignore[arg-type]
        ids = await with_ledger(state, model, lambda led: led.record([sub], actor))
        typer.echo(f"recorded submission {ids[0]}: {unit} {obligation}@{period} ×{count}")

    run_async(ctx, go)


@app.command()
def retract(
    ctx: typer.Context,
    unit: Annotated[str, typer.Option()],
    obligation: Annotated[str, typer.Option()],
    period: Annotated[str, typer.Option()],
    id: Annotated[int | None, typer.Option("--id", help="A specific submission id.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retract every active submission.")] = False,
    reason: Annotated[str, typer.Option()] = "",
    actor: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Retract the latest submission of an occurrence (re-opens it); audited."""

    async def go(state: Context) -> None:
        model = state.model()
        check(model, unit, obligation, period)
        ids = await with_ledger(
            state, model, lambda led: led.retract(unit, obligation, period, actor, reason, id, all_)
        )
        typer.echo(f"retracted submission(s) {', '.join(map(str, ids))}")

    run_async(ctx, go)


@app.command("import")
def import_(
    ctx: typer.Context,
    csv_file: Annotated[Path, typer.Argument(help="CSV with unit,obligation,period,count,at")],
    actor: Annotated[str, typer.Option()] = "import",
) -> None:
    """Import submissions from CSV: all rows or none."""

    async def go(state: Context) -> None:
        model = state.model()
        subs = load_submissions_csv(csv_file, model)
        ids = await with_ledger(state, model, lambda led: led.record(subs, actor))
        typer.echo(f"imported {len(ids)} submission(s)")

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


@app.command("migrate")
def migrate_cmd(ctx: typer.Context) -> None:
    """Create or upgrade the database schema (also done automatically by other commands)."""

    async def go(state: Context) -> None:
        engine = create_engine(state.settings.db_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        typer.echo("schema is up to date")

    run_async(ctx, go)


@app.command()
def run(
    ctx: typer.Context,
    virtual_from: Annotated[
        str | None, typer.Option(help="Replay on a virtual clock from this moment.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="With --virtual-from: stop at this moment.")
    ] = None,
    pace: Annotated[float, typer.Option(help="With --virtual-from: real seconds per step.")] = 0.0,
    tick: Annotated[int, typer.Option(help="Safety tick in seconds (real time).")] = 300,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
    web: Annotated[
        str | None, typer.Option(help="HOST:PORT: also serve the web console in this process.")
    ] = None,
) -> None:
    """Run the daemon: plan and send reminders, digests and notices as they fall due."""
    from datetime import timedelta

    from ..app import open_app
    from ..clock import VirtualClock
    from ..daemon import Daemon, run_virtual
    from ..logs import configure

    configure(log_level)

    async def go(state: Context) -> None:
        if virtual_from is None:
            from ..web.server import console_alongside

            async with open_app(state.settings, state.clock) as application:
                async with console_alongside(application, web):
                    await Daemon(application, tick=timedelta(seconds=tick)).run()
            return
        model = state.model()
        start = state.at(virtual_from, model)
        end = state.at(until, model) if until else model.schedule.campaign_end_moment()
        del model  # open_app loads its own: never hold a national directory twice
        clock = VirtualClock(start)

        async def step(moment: datetime) -> None:
            if pace:
                await asyncio.sleep(pace)

        async with open_app(state.settings, clock) as application:
            cycles = await run_virtual(application, clock, end, pace=step)
            counts = await application.outbox.status_counts()
            model = application.runtime.model
        typer.echo(
            f"virtual run {render.iso_local(start, model)} → {render.iso_local(end, model)}: "
            f"{cycles} cycles; messages by state: {counts}"
        )

    run_async(ctx, go)


@app.command()
def simulate(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help="Start of the replay (ISO 8601).")],
    to: Annotated[str, typer.Option("--to", help="End of the replay (ISO 8601).")],
    out: Annotated[Path, typer.Option(help="Output folder (outbox, messages.jsonl, database).")],
    submissions: Annotated[
        Path | None, typer.Option(help="CSV unit,obligation,period,count,at.")
    ] = None,
) -> None:
    """Replay the campaign on a virtual clock, in seconds, into a file outbox."""
    from ..logs import configure
    from ..simulate import simulate as run_simulation

    configure("WARNING")

    async def go(state: Context) -> None:
        model = state.model()
        start, end = state.at(from_, model), state.at(to, model)
        del model  # the simulation loads its own: never hold a directory twice
        result = await run_simulation(state.settings, start, end, out, submissions)
        typer.echo(f"{result.cycles} cycles, {result.sent} messages sent; states: {result.states}")
        typer.echo(f"timeline: {out / 'messages.jsonl'}  outbox: {out / 'outbox'}")

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


def main() -> None:
    sys.exit(app())  # typer raises SystemExit itself; this keeps the entry point explicit
