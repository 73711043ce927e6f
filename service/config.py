"""Settings: defaults, then environment variables (SERVICE_*), then command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .dispatcher import RetryPolicy
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

    @property
    def db_url(self) -> str:
        return self.database_url or default_url(self.state_dir)

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"
