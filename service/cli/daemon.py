"""Process commands: migrate, run (the daemon), simulate."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from .. import render
from ..store.db import create_engine, migrate
from .commands import app
from .common import Context, run_async


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
            async with open_app(state.settings, state.clock) as application:
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
