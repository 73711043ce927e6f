"""Who owes what at a moment: done / outstanding / overdue (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from .model import CampaignModel
from .occurrences import Occurrence

State = Literal["done", "outstanding", "overdue"]


class Counts(Protocol):
    """Submission counts keyed by (unit, obligation, period): a dict or a CountTable."""

    def get(self, key: tuple[str, str, str], default: int, /) -> int: ...


@dataclass(frozen=True)
class UnitStatus:
    unit: str
    occurrence: Occurrence
    count: int
    state: State

    @property
    def progress(self) -> str:
        return f"{self.count}/{self.occurrence.quota_goal}"


def state_of(occ: Occurrence, count: int, at: datetime) -> State:
    if count >= occ.quota_min:
        return "done"
    return "overdue" if at > occ.due_at else "outstanding"


def open_occurrences(model: CampaignModel, at: datetime) -> list[Occurrence]:
    """Occurrences whose period has started by ``at`` (events are not submitted)."""
    return [o for o in model.submittable() if o.opens_at <= at]


def compute_status(
    model: CampaignModel,
    counts: Counts,
    at: datetime,
    units: Iterable[str] | None = None,
) -> list[UnitStatus]:
    wanted = set(units) if units is not None else None
    out = []
    for occ in open_occurrences(model, at):
        if wanted is not None and len(wanted) == 1:
            # One unit (a unit page, a liaison's page): ask the set, not the whole list
            # of owers — at 100,000 units that scan was most of a page's time.
            owing = [u for u in wanted if model.owes(u, occ.obligation)]
        else:
            owing = model.owers[occ.obligation]
        for uid in owing:
            if wanted is not None and uid not in wanted:
                continue
            count = counts.get((uid, occ.obligation, occ.period), 0)
            out.append(UnitStatus(uid, occ, count, state_of(occ, count, at)))
    return out


def overdue_in_scope(
    model: CampaignModel, counts: Counts, at: datetime, scope: str | None = None
) -> dict[str, list[UnitStatus]]:
    """Overdue unit-occurrences grouped by obligation, limited to ``scope``'s subtree."""
    units = model.directory.subtree(scope) if scope else None
    grouped: dict[str, list[UnitStatus]] = {}
    for st in compute_status(model, counts, at, units):
        if st.state == "overdue":
            grouped.setdefault(st.occurrence.obligation, []).append(st)
    return grouped
