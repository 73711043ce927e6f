"""What every command group shares: the per-invocation context, output that prints data as
data, running a command with one located line instead of a traceback, opening the ledger."""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import render
from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError, LedgerError, ServiceError
from ..model import CampaignModel, load_model
from ..store.db import create_engine, migrate
from ..store.ledger import Ledger
from ..submissions import parse_time, resolve_unit
from .i18n import t

T = TypeVar("T")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def safe(text: object) -> str:
    """Text for the terminal: line breaks kept, every other control character visible."""
    return _CONTROL_BUT_NEWLINE.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))


def say(text: object = "", err: bool = False) -> None:
    typer.echo(safe(text), err=err)


def fail(message: str, code: int = 1) -> NoReturn:
    say(f"{t('error')}: {message}", err=True)
    raise typer.Exit(code)


@dataclass
class Context:
    settings: Settings
    clock: Clock
    debug: bool = False

    def model(self) -> CampaignModel:
        return load_model(self.settings.schedule, self.settings.contacts)

    def at(self, text: str | None, model: CampaignModel, option: str = "--at") -> datetime:
        if text is None:
            return self.clock.now()
        try:
            return parse_time(text, model.schedule.campaign.timezone)
        except ValueError:
            fail(t("bad_time", option=option, value=repr(text)))

    def unit(self, text: str, model: CampaignModel, option: str = "--unit") -> str:
        """A unit by id, or by its exact name when that name is unique."""
        try:
            return resolve_unit(model, text)
        except LedgerError as exc:
            fail(f"{option}: {str(exc).partition(': ')[2]}")


def database_label(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find either
        return "<?>"


def describe(exc: BaseException, state: Context | None) -> str | None:
    """One located line for an error an operator can fix; None for a bug."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from ..channels.base import ChannelConfigError

    if isinstance(exc, ChannelConfigError):
        where = state.settings.channels_file if state else None
        return t("channels_error", where=where or "channels", msg=exc)
    db = database_label(state.settings.db_url) if state else "?"
    if isinstance(exc, NoSuchModuleError | ArgumentError | ModuleNotFoundError):
        return t("db_unsupported", url=db)
    if isinstance(exc, DBAPIError | OSError | TimeoutError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        if isinstance(exc, OSError) and not isinstance(exc, DBAPIError):
            reason = exc.strerror or reason or type(exc).__name__
        return t("db_unreachable", url=db, reason=reason or type(exc).__name__)
    if isinstance(exc, ServiceError | ValueError):
        return str(exc)
    return None


def run_async(ctx: typer.Context, fn: Callable[[Context], Coroutine[Any, Any, T]]) -> T:
    state: Context = ctx.obj
    try:
        return asyncio.run(fn(state))
    except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
        raise
    except ConfigError as exc:
        if state.debug:
            traceback.print_exc()
        say(t("problems", n=len(exc.problems)), err=True)
        for problem in exc.problems:
            say(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    except LedgerError as exc:
        if state.debug:
            traceback.print_exc()
        fail(str(exc))
    except Exception as exc:
        if state.debug:
            raise
        line = describe(exc, state)
        if line is None:
            line = t("internal", kind=type(exc).__name__, msg=(str(exc).splitlines() or [""])[0])
        fail(f"{line} {t('debug_hint')}")


async def with_engine(state: Context, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    engine = create_engine(state.settings.db_url)
    try:
        await migrate(engine)
        return await fn(engine)
    finally:
        await engine.dispose()


async def with_ledger(
    state: Context, model: CampaignModel, fn: Callable[[Ledger], Awaitable[T]]
) -> T:
    engine = create_engine(state.settings.db_url)
    try:
        await migrate(engine)
        return await fn(Ledger(engine, model.key, state.clock))
    finally:
        await engine.dispose()


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    render.console().print(render.table(title, columns, rows))
