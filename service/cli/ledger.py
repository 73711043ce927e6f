"""Ledger commands: submit, retract, import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import LedgerError
from ..submissions import NewSubmission, check, load_submissions_csv
from .commands import app
from .common import Context, run_async, with_ledger


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
