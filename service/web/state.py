"""What every request handler reaches: the campaign, the store, the signer, the clock."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from ..clock import Clock
from ..config import Settings
from ..links import LINK_SECRET_ENV, LinkSigner
from ..model import CampaignModel
from ..runtime import Runtime
from ..store.accounts import Accounts
from ..store.console import ConsoleQueries
from ..store.ledger import Ledger
from ..store.outbox import Outbox

HERE = Path(__file__).parent
T = TypeVar("T")
SESSION_SECRET_ENV = "SERVICE_WEB_SECRET"


class MissingSecret(RuntimeError):
    pass


@dataclass(frozen=True)
class WebSettings:
    """Secrets come from the environment only; the rest has safe defaults."""

    session_secret: str
    link_secret: str
    https_only: bool = False  # set SERVICE_WEB_HTTPS=1 behind TLS: cookies get Secure
    session_max_age: int = 8 * 3600
    login_limit: int = 5
    login_window: timedelta = timedelta(minutes=15)
    login_lock: timedelta = timedelta(minutes=15)
    link_ttl: timedelta = timedelta(days=45)

    @classmethod
    def from_env(cls) -> WebSettings:
        missing = [n for n in (SESSION_SECRET_ENV, LINK_SECRET_ENV) if not os.environ.get(n)]
        if missing:
            raise MissingSecret(
                "缺少环境变量 / missing environment variable(s): "
                + ", ".join(missing)
                + " (random strings of at least 16 characters, e.g. `openssl rand -hex 32`)"
            )
        return cls(
            session_secret=os.environ[SESSION_SECRET_ENV],
            link_secret=os.environ[LINK_SECRET_ENV],
            https_only=os.environ.get("SERVICE_WEB_HTTPS", "") in ("1", "true", "yes"),
        )


@dataclass
class WebState:
    settings: Settings
    web: WebSettings
    clock: Clock
    runtime: Runtime
    engine: AsyncEngine
    ledger: Ledger
    outbox: Outbox
    accounts: Accounts
    queries: ConsoleQueries
    signer: LinkSigner
    templates: Jinja2Templates
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    gauges: dict[str, Any] = field(default_factory=dict)
    _derived: dict[str, tuple[CampaignModel, Any]] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> CampaignModel:
        return self.runtime.model

    def derived(self, name: str, build: Callable[[CampaignModel], T]) -> T:
        """``build(model)`` once per loaded campaign model, not once per request (a reload
        brings a new model object, and with it a fresh value)."""
        model = self.model
        hit = self._derived.get(name)
        if hit is None or hit[0] is not model:
            hit = self._derived[name] = (model, build(model))
        value: T = hit[1]
        return value


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state
