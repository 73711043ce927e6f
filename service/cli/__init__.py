"""The ``service`` command line: one module per command group, all on one Typer app.

Each group module registers its commands on ``app`` when imported; the imports below are
the whole list of groups.
"""

from __future__ import annotations

from . import daemon, doctor, ledger, messages, views  # noqa: F401  (registers the command groups)
from . import intake as _intake  # noqa: F401  (service forms/intake/review/mailbox/report)
from . import requeue as _requeue  # noqa: F401  (registers ``service requeue``)
from . import web as web
from .commands import app, main

__all__ = ["app", "main"]
