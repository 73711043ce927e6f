"""Message templates (placeholder until the templates issue lands)."""

from __future__ import annotations

from pathlib import Path

from .model import CampaignModel


def check_templates(model: CampaignModel, folder: Path) -> None:
    """Render every template against sample data; raise ConfigError on the first failure."""
    return None
