"""Campaign reminder service: calendar, submissions ledger, reminders and digests."""

from __future__ import annotations

__version__ = "0.1.0"
