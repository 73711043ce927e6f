"""``service forms | intake | review | mailbox | report``: thin shells over service.intake."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError, LedgerError
from ..forms import blank_file_name, blank_form, forms_in
from ..intake.core import Hints, Intake, Outcome, intake_file
from ..intake.read import FormError
from ..model import CampaignModel, load_model
from ..store.db import create_engine, migrate
from .commands import app

T = TypeVar("T")
review_app = typer.Typer(help="The office's review queue (unplaced files, liaison changes).")
mailbox_app = typer.Typer(help="The office mailbox (IMAP).")
app.add_typer(review_app, name="review")
app.add_typer(mailbox_app, name="mailbox")

_STATUS = {"recorded": "已登记", "review": "待审核", "duplicate": "重复"}


def _run(ctx: typer.Context, fn: Callable[[Settings, Clock], Coroutine[Any, Any, T]]) -> T:
    # Only the settings and clock of the shared context: the core module's helpers are
    # being reorganised, and these commands need nothing else from it.
    try:
        return asyncio.run(fn(ctx.obj.settings, ctx.obj.clock))
    except ConfigError as exc:
        typer.echo(f"{len(exc.problems)} problem(s):", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    except (LedgerError, FormError) as exc:
        typer.echo(f"错误 / error: {exc}", err=True)
        raise typer.Exit(1) from None


@asynccontextmanager
async def opened(
    settings: Settings, clock: Clock, actor: str
) -> AsyncIterator[tuple[CampaignModel, Intake]]:
    model = load_model(settings.schedule, settings.contacts)
    engine = create_engine(settings.db_url)
    try:
        await migrate(engine)
        yield model, Intake(model, engine, clock, settings.state_dir, actor)
    finally:
        await engine.dispose()


def _print(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        typer.echo(f"[{_STATUS[o.status]}] {o.filename}：{o.message}")


@app.command()
def forms(
    ctx: typer.Context,
    outdir: Annotated[Path, typer.Argument(help="Folder for the blank forms.")],
    unit: Annotated[str | None, typer.Option(help="Unit id whose name is prefilled.")] = None,
) -> None:
    """Write the schedule's forms (附件) as blank xlsx files."""

    async def go(settings: Settings, clock: Clock) -> None:
        model = load_model(settings.schedule, settings.contacts)
        name = ""
        if unit is not None:
            if unit not in model.directory.units:
                raise LedgerError(f"unit: unknown unit {unit!r}")
            name = model.directory.units[unit].name
        outdir.mkdir(parents=True, exist_ok=True)
        for ob, form in forms_in(model.schedule):
            path = outdir / blank_file_name(ob, form, name)
            path.write_bytes(blank_form(form, name))
            typer.echo(f"{form.attachment} {ob.key} → {path}")

    _run(ctx, go)


@app.command("intake")
def intake_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A filled form (.xlsx/.csv) or an e-mail (.eml).")],
    unit: Annotated[str | None, typer.Option(help="Unit id (else inferred).")] = None,
    obligation: Annotated[str | None, typer.Option(help="Obligation key (else inferred).")] = None,
    period: Annotated[str | None, typer.Option(help="Period key (else inferred).")] = None,
    actor: Annotated[str, typer.Option(help="Who records it.")] = "cli",
) -> None:
    """Record a submission from a filled form or a whole e-mail; unclear ones go to review."""

    async def go(settings: Settings, clock: Clock) -> None:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise LedgerError(f"{file}: {exc.strerror}") from None
        async with opened(settings, clock, actor) as (model, intake):
            outcomes = await intake_file(
                model,
                intake.store.engine,
                clock,
                settings.state_dir,
                file.name,
                data,
                hints=Hints(unit, obligation, period),
                actor=actor,
            )
        _print(outcomes)

    _run(ctx, go)


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Decided items too.")] = False,
) -> None:
    """What waits for the office's decision."""

    async def go(settings: Settings, clock: Clock) -> None:
        async with opened(settings, clock, "cli") as (_model, intake):
            items = await intake.store.reviews(None if all_ else "open")
        if not items:
            typer.echo("没有待审核的事项。")
        for item in items:
            kind = "联络员变更" if item.kind == "liaison" else "报送材料"
            extra = ""
            if item.kind == "liaison":
                p = item.proposal
                contact = " ".join(str(p.get(k) or "") for k in ("mobile", "email"))
                extra = f"  提议：{p['unit']} {p['name']} {contact}"
            else:
                p = item.proposal
                extra = f"  文件：{p.get('filename') or '-'}  发件人：{p.get('sender') or '-'}"
            typer.echo(f"#{item.id} [{item.status}] {kind}：{item.reason}\n{extra}")

    _run(ctx, go)


@review_app.command("show")
def review_show(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="Review item number.")],
) -> None:
    """One item in full: the reason, the received file and what was read from it."""

    async def go(settings: Settings, clock: Clock) -> None:
        async with opened(settings, clock, "cli") as (model, intake):
            item = await intake.store.review(item_id)
            if item is None:
                raise LedgerError(f"review: no item #{item_id}")
            evidence = await intake.store.evidence(item.evidence_id or 0)
        tz = model.schedule.campaign.tz
        typer.echo(f"#{item.id} [{item.status}] {item.reason}")
        for key, value in item.proposal.items():
            typer.echo(f"  {key}: {value}")
        if evidence is not None:
            at = evidence.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
            typer.echo(f"文件：{evidence.filename}（{at} 收到，发件人 {evidence.sender or '-'}）")
            typer.echo(f"保存位置：{evidence.stored_path}")
            for row in evidence.rows:
                values = "，".join(f"{k}={v}" for k, v in row["values"].items() if v is not None)
                typer.echo(f"  {row['sheet']} 第{row['row']}行：{values}")
                for problem in row.get("problems", []):
                    typer.echo(f"    问题：{problem}")

    _run(ctx, go)


@review_app.command("accept")
def review_accept(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="Review item number.")],
    unit: Annotated[str | None, typer.Option()] = None,
    obligation: Annotated[str | None, typer.Option()] = None,
    period: Annotated[str | None, typer.Option()] = None,
    note: Annotated[str, typer.Option()] = "",
    actor: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Accept an item: record the submission, or apply the liaison change to people.csv."""
    from ..intake.review import accept

    async def go(settings: Settings, clock: Clock) -> None:
        async with opened(settings, clock, actor) as (_model, intake):
            item = await intake.store.review(item_id)
            if item is None:
                raise LedgerError(f"review: no item #{item_id}")
            typer.echo(
                await accept(
                    intake,
                    item,
                    settings.contacts,
                    unit=unit,
                    obligation=obligation,
                    period=period,
                    note=note,
                )
            )

    _run(ctx, go)


@review_app.command("reject")
def review_reject(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="Review item number.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the item).")] = "",
    actor: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Reject an item: nothing is recorded; the file stays as evidence."""
    from ..intake.review import reject

    async def go(settings: Settings, clock: Clock) -> None:
        async with opened(settings, clock, actor) as (_model, intake):
            item = await intake.store.review(item_id)
            if item is None:
                raise LedgerError(f"review: no item #{item_id}")
            typer.echo(await reject(intake, item, reason))

    _run(ctx, go)


@mailbox_app.command("poll")
def mailbox_poll(ctx: typer.Context) -> None:
    """One pass over the office mailbox (SERVICE_IMAP_HOST/USER/PASSWORD/FOLDER/TLS/PORT)."""
    from ..intake.mailbox import MailboxConfig, poll

    async def go(settings: Settings, clock: Clock) -> None:
        cfg = MailboxConfig.from_env()
        async with opened(settings, clock, "mailbox") as (_model, intake):
            try:
                result = await poll(intake, cfg)
            except (OSError, imaplib.IMAP4.error) as exc:
                raise LedgerError(f"邮箱 {cfg.host}:{cfg.port} 收取失败：{exc}") from None
        _print(result.outcomes)
        typer.echo(f"本次收取 {result.fetched} 封邮件，处理失败 {result.failed} 封。")

    _run(ctx, go)


@app.command()
def report(
    ctx: typer.Context,
    obligation: Annotated[str, typer.Option(help="Obligation with a form, e.g. weekly-progress.")],
    period: Annotated[str, typer.Option(help="Period key, e.g. 2023-W22.")],
    scope: Annotated[str | None, typer.Option(help="Unit id whose subtree is summed.")] = None,
    xlsx: Annotated[Path | None, typer.Option(help="Write the workbook here.")] = None,
) -> None:
    """Sum the filled forms of a period for a scope: regions, province, who is missing."""
    from ..intake.report import build_report, report_xlsx
    from ..store.ledger import Ledger

    async def go(settings: Settings, clock: Clock) -> None:
        async with opened(settings, clock, "cli") as (model, intake):
            active = await Ledger(intake.store.engine, model.key, clock).counts()
            rep = await build_report(model, intake.store, active, obligation, period, scope)
        done = [x for x in rep.lines if x.reported]
        typer.echo(f"{obligation}@{period}：应报 {len(rep.lines)} 个单位，已报 {len(done)} 个")
        totals = rep.totals(done)
        for f in rep.fields:
            typer.echo(f"  {f.label}：{totals[f.key]}{f.unit}")
        if rep.missing:
            typer.echo("未报送：" + "、".join(x.name for x in rep.missing))
        for name, file, problem in rep.problems:
            typer.echo(f"数值问题：{name}（{file}）{problem}")
        if xlsx is not None:
            xlsx.write_bytes(report_xlsx(rep, model))
            typer.echo(f"已写入 {xlsx}")

    _run(ctx, go)


@mailbox_app.command("watch")
def mailbox_watch(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(min=5, help="Seconds between passes.")] = 60,
) -> None:
    """Watch the mailbox (IMAP IDLE where offered) until SIGTERM/SIGINT.

    Run it next to `service run`; or wire `cycle_hook` into the daemon.
    """
    import signal

    from ..intake.mailbox import MailboxConfig, watch

    async def go(settings: Settings, clock: Clock) -> None:
        cfg = MailboxConfig.from_env()
        engine = create_engine(settings.db_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await migrate(engine)

            def make() -> Intake:
                model = load_model(settings.schedule, settings.contacts)
                return Intake(model, engine, clock, settings.state_dir, "mailbox")

            passes = await watch(make, cfg, clock, interval, stop)
        finally:
            await engine.dispose()
        typer.echo(f"邮箱收取已停止（共 {passes} 轮）。")

    _run(ctx, go)
