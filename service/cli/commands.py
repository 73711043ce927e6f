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
from .common import Context, database_label, fail, run_async, say
from .i18n import env_lang, help_text, set_lang, t

app = typer.Typer(
    help=help_text("app.help"),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text: "[env …]" must not vanish as markup
)
_SCHEMES = ("postgresql", "postgres", "sqlite")


@app.callback()
def main_options(
    ctx: typer.Context,
    schedule: Annotated[Path | None, typer.Option(help=help_text("opt.schedule"))] = None,
    contacts: Annotated[Path | None, typer.Option(help=help_text("opt.contacts"))] = None,
    templates: Annotated[Path | None, typer.Option(help=help_text("opt.templates"))] = None,
    channels: Annotated[Path | None, typer.Option(help=help_text("opt.channels"))] = None,
    state_dir: Annotated[Path | None, typer.Option(help=help_text("opt.state_dir"))] = None,
    database_url: Annotated[str | None, typer.Option(help=help_text("opt.database_url"))] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=64, help=help_text("opt.concurrency"))
    ] = None,
    unrecorded: Annotated[
        int | None, typer.Option(min=1, max=10_000, help=help_text("opt.unrecorded"))
    ] = None,
    lang: Annotated[str | None, typer.Option(help=help_text("opt.lang"))] = None,
    debug: Annotated[bool, typer.Option("--debug", help=help_text("opt.debug"))] = False,
) -> None:
    if lang is not None and lang not in ("zh", "en"):
        fail(f"--lang: {lang!r} (zh | en)")
    set_lang(lang or env_lang(argv=[]))
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
    if settings.database_url is not None:
        check_database_url(settings.database_url, from_option=database_url is not None)
    ctx.obj = Context(settings, RealClock(), debug=debug)


def check_database_url(url: str, from_option: bool) -> None:
    """Only the two databases the service supports; anything else is one located line."""
    where = "--database-url" if from_option else "SERVICE_DATABASE_URL"
    scheme = url.partition(":")[0].partition("+")[0].lower()
    if "://" not in url or scheme not in _SCHEMES:
        fail(f"{where}: {t('db_unsupported', url=database_label(url))}")


@app.command(help=help_text("cmd.validate"))
def validate(ctx: typer.Context) -> None:

    async def go(state: Context) -> None:
        model = state.model()
        from ..templates import check_templates

        s = state.settings
        templates = check_templates(model, s.templates, s.render_limits)
        from ..checks import check_send_time

        # What would fail only when sent: the channels file, every person's SMS.
        await check_send_time(model, templates, s.contacts, s.channels_file, s.state_dir)
        for warning in model.warnings():
            say(f"{t('warning')}: {warning}", err=True)
        say(
            t(
                "validate_ok",
                key=model.key,
                obligations=len(model.schedule.obligations),
                occurrences=len(model.occurrences),
                submittable=len(model.submittable()),
                units=len(model.directory.units),
                people=len(model.directory.people),
            )
        )

    run_async(ctx, go)


def main() -> None:
    from .usage import run

    sys.exit(run(app))
