"""What every command group shares: the per-invocation context, running a coroutine with
located errors instead of tracebacks, and opening the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import typer

from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError, LedgerError
from ..model import CampaignModel, load_model
from ..store.db import create_engine, migrate
from ..store.ledger import Ledger
from ..submissions import parse_time

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
