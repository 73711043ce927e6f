"""Running the console under uvicorn: alone (``service serve``) or next to the daemon in
one process (``service run --web HOST:PORT``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator

import uvicorn
from fastapi import FastAPI

from ..app import App
from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError, Problem
from .app import create_app
from .state import MissingSecret, WebSettings


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (the daemon's)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # access_log off: uvicorn would log personal-link tokens in paths; the app logs
    # requests itself with tokens redacted (service/web/app.py).
    return uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, server_header=False
    )


async def serve(settings: Settings, clock: Clock, host: str, port: int) -> None:
    app = create_app(settings, clock, web=WebSettings.from_env())
    await uvicorn.Server(server_config(app, host, port)).serve()


@contextlib.asynccontextmanager
async def start_server(app: FastAPI, host: str, port: int) -> AsyncIterator[EmbeddedServer]:
    """Serve ``app`` in a task of the running loop until the block ends."""
    server = EmbeddedServer(server_config(app, host, port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (e.g. the port is taken)
            raise RuntimeError("the web server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_alongside(application: App, host: str, port: int) -> AsyncIterator[FastAPI]:
    """The console in the daemon's process, on its engine and campaign (embedded default)."""
    app = create_app(
        application.settings,
        application.reconciler.clock,
        web=WebSettings.from_env(),
        engine=application.outbox.engine,
        runtime=application.runtime,
    )
    async with start_server(app, host, port):
        yield app


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6); ValueError names what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--web: expected HOST:PORT, e.g. 127.0.0.1:8080, not {text!r}")
    return host.strip("[]"), int(port)


def console_alongside(
    application: App, web: str | None
) -> contextlib.AbstractAsyncContextManager[FastAPI | None]:
    """``service run --web HOST:PORT``: the console next to the daemon, or nothing."""
    if web is None:
        return contextlib.nullcontext()
    try:
        host, port = parse_hostport(web)
        WebSettings.from_env()
    except (ValueError, MissingSecret) as exc:  # reported like any other bad input
        raise ConfigError([Problem("--web", None, "", str(exc))]) from None
    return serve_alongside(application, host, port)
