"""On time or late: when an occurrence's quota minimum was met, from dated submissions (pure).

``status.compute_status`` says done / outstanding / overdue at a moment; the console also
shows *how* a done occurrence was done — before its due moment (已完成) or after (补报).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .model import CampaignModel

Key = tuple[str, str, str]  # (unit, obligation, period)


def completion_moments(
    model: CampaignModel, rows: Iterable[tuple[str, str, str, int, datetime]]
) -> dict[Key, datetime]:
    """The moment each (unit, obligation, period) reached its quota minimum.

    ``rows`` are active submissions ``(unit, obligation, period, count, submitted_at)`` in
    ``submitted_at`` order; occurrences never completed are absent.
    """
    running: dict[Key, int] = {}
    done: dict[Key, datetime] = {}
    for unit, obligation, period, count, at in rows:
        key = (unit, obligation, period)
        if key in done:
            continue
        occ = model.occurrence(obligation, period)
        if occ is None:
            continue
        running[key] = total = running.get(key, 0) + count
        if total >= occ.quota_min:
            done[key] = at
    return done


def is_late(model: CampaignModel, key: Key, moments: dict[Key, datetime]) -> bool:
    occ = model.occurrence(key[1], key[2])
    at = moments.get(key)
    return occ is not None and at is not None and at > occ.due_at
