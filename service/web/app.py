"""The console's ASGI application: ``create_app(settings, clock)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware.sessions import SessionMiddleware

from ..clock import Clock
from ..config import Settings
from ..links import LinkSigner
from ..runtime import Runtime
from ..store.accounts import Accounts
from ..store.console import ConsoleQueries
from ..store.db import create_engine, migrate
from ..store.ledger import Ledger
from ..store.outbox import Outbox
from . import api, feeds, office, ops, people
from .auth import LoginRequired, route_rules
from .security import ConsoleMiddleware
from .state import HERE, WebSettings, WebState
from .validation import chinese_errors
from .views import render

log = structlog.get_logger("service.web")


def create_app(
    settings: Settings,
    clock: Clock,
    *,
    web: WebSettings | None = None,
    engine: AsyncEngine | None = None,
    runtime: Runtime | None = None,
) -> FastAPI:
    """The console on the same store and campaign files as the daemon.

    ``engine``/``runtime`` may be shared with a daemon in the same process (``service run
    --web``); otherwise they are opened here and closed on shutdown.
    """
    web = web or WebSettings.from_env()
    runtime = runtime or Runtime.load(settings.schedule, settings.contacts, settings.templates)
    owned = engine is None
    engine = engine or create_engine(settings.db_url)
    key = runtime.model.key
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    state = WebState(
        settings=settings,
        web=web,
        clock=clock,
        runtime=runtime,
        engine=engine,
        ledger=Ledger(engine, key, clock),
        outbox=Outbox(engine, key),
        accounts=Accounts(engine, clock),
        queries=ConsoleQueries(engine, key),
        signer=LinkSigner(web.link_secret, web.link_ttl),
        templates=templates,
    )
    ops.register_metrics(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await migrate(engine)
        try:
            yield
        finally:
            if owned:
                await engine.dispose()

    app = FastAPI(
        title="活动提醒服务 API",
        version="1",
        docs_url=None,  # Swagger UI needs inline script, which the CSP forbids
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        lifespan=lifespan,
    )
    app.state.web = state
    app.add_middleware(
        SessionMiddleware,
        secret_key=web.session_secret,
        session_cookie="console_session",
        max_age=web.session_max_age,
        same_site="lax",  # strict would drop the cookie after arriving from a mail link
        https_only=web.https_only,
    )
    app.add_middleware(ConsoleMiddleware)  # outermost: headers and logs for every answer
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (people, office, api, feeds, ops):
        app.include_router(module.router)
    _handlers(app)
    missing = [f"{m} {p}" for (m, p), rule in route_rules(app).items() if rule is None]
    if missing:
        raise RuntimeError(f"routes without an access rule: {', '.join(sorted(missing))}")
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return render(request, "error.html", status_code=exc.status_code, message=str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors: list[dict[str, Any]] = chinese_errors(exc.errors())
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "输入有误", "errors": errors}, status_code=422)
        text = "；".join(f"{e['field']}：{e['message']}" for e in errors)
        return render(request, "error.html", status_code=400, message=f"输入有误：{text}")
