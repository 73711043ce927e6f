"""Ledger commands: submit, retract, import, audit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .. import render
from ..errors import LedgerError
from ..store.ledger import ImportSummary
from ..submissions import MAX_COUNT, SOURCES, ImportReader, NewSubmission, check, check_text
from .commands import app
from .common import Context, print_table, run_async, say, with_ledger
from .i18n import help_text, t

MAX_ACTOR = 128  # submissions.recorded_by / retracted_by


def check_actor(actor: str) -> None:
    check_text("--actor", actor)
    if not 1 <= len(actor) <= MAX_ACTOR:
        raise LedgerError(f"--actor: {t('length', lo=1, hi=MAX_ACTOR)}")


@app.command(help=help_text("cmd.submit"))
def submit(
    ctx: typer.Context,
    unit: Annotated[str, typer.Option(help=help_text("opt.unit"))],
    obligation: Annotated[str, typer.Option(help=help_text("opt.obligation"))],
    period: Annotated[str, typer.Option(help=help_text("opt.period"))],
    count: Annotated[int, typer.Option(min=1, max=MAX_COUNT)] = 1,
    at: Annotated[str | None, typer.Option(help=help_text("opt.submitted_at"))] = None,
    source: Annotated[str, typer.Option(help=" | ".join(SOURCES))] = "admin",
    actor: Annotated[str, typer.Option(help=help_text("opt.actor"))] = "cli",
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        unit_id = state.unit(unit, model)
        check(model, unit_id, obligation, period, count)
        check_actor(actor)
        if source not in SOURCES:
            raise LedgerError(f"--source: {t('one_of', values=', '.join(SOURCES))}")
        sub = NewSubmission(unit_id, obligation, period, count, state.at(at, model), source)  # type: ignore[arg-type]
        ids = await with_ledger(state, model, lambda led: led.record([sub], actor))
        say(t("submitted", id=ids[0], unit=unit_id, obligation=obligation, period=period, n=count))

    run_async(ctx, go)


@app.command(help=help_text("cmd.retract"))
def retract(
    ctx: typer.Context,
    unit: Annotated[str, typer.Option(help=help_text("opt.unit"))],
    obligation: Annotated[str, typer.Option(help=help_text("opt.obligation"))],
    period: Annotated[str, typer.Option(help=help_text("opt.period"))],
    id: Annotated[int | None, typer.Option("--id", min=1, help=help_text("opt.sub_id"))] = None,
    all_: Annotated[bool, typer.Option("--all", help=help_text("opt.all"))] = False,
    reason: Annotated[str, typer.Option(help=help_text("opt.reason"))] = "",
    actor: Annotated[str, typer.Option(help=help_text("opt.actor"))] = "cli",
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        unit_id = state.unit(unit, model)
        check(model, unit_id, obligation, period)
        check_actor(actor)
        check_text("--reason", reason)
        ids = await with_ledger(
            state,
            model,
            lambda led: led.retract(unit_id, obligation, period, actor, reason, id, all_),
        )
        say(t("retracted", ids=", ".join(map(str, ids))))

    run_async(ctx, go)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int], None]]:
    """Rows done so far on a terminal (stderr); nothing in a pipe or CI."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done: bar.update(task, completed=done)


@app.command("import", help=help_text("cmd.import"))
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help=help_text("arg.import_file"))],
    actor: Annotated[str, typer.Option(help=help_text("opt.actor"))] = "import",
    dry_run: Annotated[bool, typer.Option("--dry-run", help=help_text("opt.dry_run"))] = False,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        check_actor(actor)
        reader = ImportReader(file, model)
        with progress_bar(t("importing", file=file)) as progress:
            summary = await with_ledger(
                state,
                model,
                lambda led: led.import_rows(reader, actor, dry_run=dry_run, progress=progress),
            )
        if json:
            say(render.dump_json({**summary.as_dict(), "dry_run": dry_run}))
            return
        say(import_line(summary, dry_run))

    run_async(ctx, go)


def import_line(summary: ImportSummary, dry_run: bool) -> str:
    return t(
        "import_dry" if dry_run else "import_done",
        encoding=summary.encoding,
        rows=summary.rows,
        new=summary.new,
        already=summary.already,
        conflicting=summary.conflicting,
    )


@app.command(help=help_text("cmd.audit"))
def audit(
    ctx: typer.Context,
    unit: Annotated[str | None, typer.Option(help=help_text("opt.unit"))] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help=help_text("opt.limit"))] = 200,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        unit_id = state.unit(unit, model) if unit is not None else None
        rows = await with_ledger(state, model, lambda led: led.history(unit_id))
        rows = rows[-limit:]
        names = model.directory.units

        def local(moment: object) -> str:
            return render.iso_local(moment, model) if moment else ""  # type: ignore[arg-type]

        items = [
            {
                "id": r.id,
                "unit": r.unit,
                "unit_name": names[r.unit].name if r.unit in names else r.unit,
                "obligation": r.obligation,
                "period": r.period,
                "count": r.count,
                "submitted_at": local(r.submitted_at),
                "source": r.source,
                "recorded_by": r.recorded_by,
                "retracted_at": local(r.retracted_at) or None,
            }
            for r in rows
        ]
        if json:
            say(render.dump_json({"campaign": model.key, "submissions": items}))
            return
        print_table(
            t("audit_title", n=len(items)),
            t("audit_cols").split("|"),
            [
                [
                    str(i["id"]),
                    str(i["unit_name"]),
                    str(i["obligation"]),
                    str(i["period"]),
                    str(i["count"]),
                    str(i["submitted_at"]),
                    str(i["source"]),
                    str(i["recorded_by"]),
                    t("retracted_at", at=i["retracted_at"]) if i["retracted_at"] else t("active"),
                ]
                for i in items
            ],
        )

    run_async(ctx, go)
