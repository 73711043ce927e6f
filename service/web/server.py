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
from .app import create_app
from .state import WebSettings


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
