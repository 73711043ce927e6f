"""Settings: defaults, then environment variables (SERVICE_*), then command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .dispatcher import RetryPolicy
from .sandbox import DEFAULT_MAX_CHARS, DEFAULT_SECONDS, RenderLimits
from .store.db import default_url


class Settings(BaseSettings):
    """Where the inputs and the state live. Secrets are never fields here (see channels)."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore")

    schedule: Path = Path("schedules/jilin-2023.yaml")
    contacts: Path = Path("contacts")
    templates: Path = Path("templates")
    state_dir: Path = Path("state")
    database_url: str | None = None
    channels_file: Path | None = None  # YAML describing SMTP/SMS backends; default: file outbox
    # Messages being sent at once, and begun-but-not-yet-recorded at most: the latter bounds
    # how many a killed process can send twice (README, invariant 3).
    dispatch_concurrency: int = Field(default=RetryPolicy.concurrency, ge=1, le=64)
    dispatch_unrecorded: int = Field(default=RetryPolicy.unrecorded, ge=1, le=10_000)
    # Each template render (validation, reload, send): wall seconds and characters built.
    render_timeout: float = Field(default=DEFAULT_SECONDS, gt=0, le=60)
    render_max_chars: int = Field(default=DEFAULT_MAX_CHARS, ge=10_000, le=100_000_000)

    @property
    def render_limits(self) -> RenderLimits:
        return RenderLimits(self.render_timeout, self.render_max_chars)

    @property
    def db_url(self) -> str:
        return self.database_url or default_url(self.state_dir)

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"
