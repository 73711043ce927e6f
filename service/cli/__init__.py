"""The ``service`` command line: one module per command group, all on one Typer app.

Each group module registers its commands on ``app`` when imported; the imports below are
the whole list of groups.
"""

from __future__ import annotations

from . import intake as _intake  # noqa: F401  (service forms/intake/review/mailbox/report)
from .commands import app, main

__all__ = ["app", "main"]
