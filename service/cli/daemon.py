"""Process commands: migrate, run (the daemon), simulate."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import render
from ..store.db import create_engine, migrate
from .commands import app
from .common import Context, fail, run_async, say
from .i18n import counts_line, help_text, t

if TYPE_CHECKING:
    from ..app import App
    from ..clock import Clock
    from ..intake.mailbox import MailboxConfig
    from ..metrics import DaemonMetrics

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@app.command("migrate", help=help_text("cmd.migrate"))
def migrate_cmd(ctx: typer.Context) -> None:
    async def go(state: Context) -> None:
        engine = create_engine(state.settings.db_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        say(t("schema_ok"))

    run_async(ctx, go)


@contextmanager
def spinner(label: str) -> Iterator[Any]:
    """A live line on a terminal (stderr); nothing in a pipe or CI."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status(label) as status:
        yield status


def mailbox_config() -> MailboxConfig | None:
    """The office mailbox when ``SERVICE_IMAP_HOST`` is set (credentials from the
    environment only); a missing or unsafe setting stops ``run`` before it starts."""
    if not os.environ.get("SERVICE_IMAP_HOST"):
        return None
    from ..intake.mailbox import MailboxConfig

    return MailboxConfig.from_env()


def mailbox_hook(
    cfg: MailboxConfig | None, application: App, clock: Clock
) -> Callable[[], Awaitable[None]] | None:
    """One mailbox pass before each cycle: what it records cancels that cycle's reminders."""
    if cfg is None:
        return None
    from ..intake.core import Intake
    from ..intake.mailbox import cycle_hook

    settings = application.settings

    def make() -> Intake:  # the daemon's current model: a reload is picked up
        engine = application.outbox.engine
        return Intake(application.runtime.model, engine, clock, settings.state_dir, "mailbox")

    return cycle_hook(cfg, make)


def hostport(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6), or a located refusal."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"{option}: 应为 HOST:PORT，例如 127.0.0.1:9100，而不是 {text!r}")
    return host.strip("[]"), int(port)


@contextmanager
def daemon_metrics(at: tuple[str, int] | None) -> Iterator[DaemonMetrics | None]:
    """The daemon's metrics served on ``at`` while inside (nothing when not asked)."""
    if at is None:
        yield None
        return
    from ..metrics import DaemonMetrics

    gauges = DaemonMetrics()
    with ExitStack() as stack:
        try:
            port = stack.enter_context(gauges.served(*at))
        except OSError as exc:
            fail(f"--metrics: 无法监听 {at[0]}:{at[1]}：{exc.strerror or exc}")
        logging.getLogger("service.metrics").info("metrics on http://%s:%d/metrics", at[0], port)
        yield gauges


@app.command(help=help_text("cmd.run"))
def run(
    ctx: typer.Context,
    virtual_from: Annotated[str | None, typer.Option(help=help_text("opt.virtual_from"))] = None,
    until: Annotated[str | None, typer.Option(help=help_text("opt.until_run"))] = None,
    pace: Annotated[float, typer.Option(min=0.0, max=60.0, help=help_text("opt.pace"))] = 0.0,
    tick: Annotated[int, typer.Option(min=1, max=86_400, help=help_text("opt.tick"))] = 300,
    log_level: Annotated[str, typer.Option(help=" | ".join(LOG_LEVELS))] = "INFO",
    web: Annotated[
        str | None, typer.Option(help="HOST:PORT：在同一进程中同时提供网页控制台。")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="HOST:PORT：在此地址提供守护进程自身的 Prometheus 指标（/metrics）。"),
    ] = None,
) -> None:
    from datetime import timedelta

    from ..app import open_app
    from ..clock import VirtualClock
    from ..daemon import Daemon, run_virtual
    from ..logs import configure

    if log_level.upper() not in LOG_LEVELS:
        fail(f"--log-level: {log_level!r}: {t('one_of', values=', '.join(LOG_LEVELS))}")
    if until is not None and virtual_from is None:
        fail(t("until_needs_virtual"))
    if metrics is not None and virtual_from is not None:
        fail("--metrics: 仅用于实时运行（不能与 --virtual-from 同用）")
    metrics_at = hostport(metrics, "--metrics") if metrics is not None else None
    configure(log_level.upper())
    # Alembic announces its dialect at INFO on every start: noise for an operator.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))

    async def go(state: Context) -> None:
        mailbox = mailbox_config()
        if virtual_from is None:
            from ..web.server import console_alongside

            async with open_app(state.settings, state.clock) as application:
                hook = mailbox_hook(mailbox, application, state.clock)
                async with console_alongside(application, web):
                    with daemon_metrics(metrics_at) as gauges:
                        daemon = Daemon(
                            application,
                            tick=timedelta(seconds=tick),
                            before_cycle=hook,
                            metrics=gauges,
                        )
                        await daemon.run()
            return
        model = state.model()
        start = state.at(virtual_from, model, "--virtual-from")
        end = state.at(until, model, "--until") if until else model.schedule.campaign_end_moment()
        if end <= start:
            fail(t("end_before_start", option="--until"))
        tz = model.schedule.campaign.tz
        del model  # open_app loads its own: never hold a national directory twice
        clock = VirtualClock(start)

        with spinner(t("replaying")) as status:

            async def step(moment: datetime) -> None:
                if status is not None:
                    status.update(t("replay_at", at=moment.astimezone(tz).isoformat()))
                if pace:
                    await asyncio.sleep(pace)

            async with open_app(state.settings, clock) as application:
                hook = mailbox_hook(mailbox, application, clock)
                cycles = await run_virtual(application, clock, end, pace=step, before_cycle=hook)
                counts = await application.outbox.status_counts()
                model = application.runtime.model
        say(
            t(
                "virtual_done",
                start=render.iso_local(start, model),
                end=render.iso_local(end, model),
                cycles=cycles,
                counts=counts_line(counts),
            )
        )

    run_async(ctx, go)


@app.command(help=help_text("cmd.simulate"))
def simulate(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help=help_text("opt.sim_from"))],
    to: Annotated[str, typer.Option("--to", help=help_text("opt.sim_to"))],
    out: Annotated[Path, typer.Option(help=help_text("opt.sim_out"))],
    submissions: Annotated[Path | None, typer.Option(help=help_text("opt.sim_subs"))] = None,
) -> None:
    from ..logs import configure
    from ..simulate import simulate as run_simulation

    configure("WARNING")

    async def go(state: Context) -> None:
        model = state.model()
        start, end = state.at(from_, model, "--from"), state.at(to, model, "--to")
        if end <= start:
            fail(t("end_before_start", option="--to"))
        del model  # the simulation loads its own: never hold a directory twice
        with spinner(t("replaying")):
            result = await run_simulation(state.settings, start, end, out, submissions)
        say(
            t("sim_done", cycles=result.cycles, sent=result.sent, counts=counts_line(result.states))
        )
        say(t("sim_files", timeline=out / "messages.jsonl", outbox=out / "outbox"))

    run_async(ctx, go)
