"""The ``service`` Typer app, its global options, and ``validate``.

Command groups live in their own modules beside this one (ledger, views, daemon, doctor…);
each does ``from .commands import app`` and registers its commands on it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ..clock import RealClock
from ..config import Settings
from .common import Context, fail, run_async

app = typer.Typer(
    help="Campaign calendar, submissions ledger and reminders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def main() -> None:
    sys.exit(app())  # typer raises SystemExit itself; this keeps the entry point explicit
