"""Who owes what at a moment: done / outstanding / overdue (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    completed_at: datetime | None = None  # when the quota's minimum was reached, if known

    @property
    def progress(self) -> str:
        return f"{self.count}/{self.occurrence.quota_goal}"

    @property
    def days_late(self) -> int | None:
        """Done after the deadline (补报): started days late, at least 1; else None."""
        if self.completed_at is None or self.completed_at <= self.occurrence.due_at:
            return None
        return -((self.occurrence.due_at - self.completed_at) // timedelta(days=1))

    @property
    def over_count(self) -> bool:
        """More submitted than the target: worth a look (a double import, a typo)."""
        return self.count > self.occurrence.quota_goal


def state_of(occ: Occurrence, count: int, at: datetime) -> State:
    if count >= occ.quota_min:
        return "done"
    return "overdue" if at > occ.due_at else "outstanding"


def open_occurrences(model: CampaignModel, at: datetime) -> list[Occurrence]:
    """Occurrences whose period has started, or that are already due, by ``at`` (events
    are not submitted). A holiday shift can move a due date before the period's nominal
    start (week 40 of 2023 is due 09-28, before the National Day week begins): it is
    still owed from its due date on."""
    return [o for o in model.submittable() if o.opens_at <= at or o.due_at <= at]


def compute_status(
    model: CampaignModel,
    counts: Counts,
    at: datetime,
    units: Iterable[str] | None = None,
    completed: Mapping[tuple[str, str, str], datetime] | None = None,
) -> list[UnitStatus]:
    wanted = set(units) if units is not None else None
    done_at = completed or {}
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
            key = (uid, occ.obligation, occ.period)
            out.append(UnitStatus(uid, occ, count, state_of(occ, count, at), done_at.get(key)))
    return out


def completion_moments(
    model: CampaignModel, rows: Iterable[tuple[str, str, str, int, datetime]]
) -> dict[tuple[str, str, str], datetime]:
    """When each (unit, obligation, period) reached its minimum, from submissions oldest
    first (unit, obligation, period, count, submitted_at)."""
    minimum = {(o.obligation, o.period): o.quota_min for o in model.submittable()}
    running: dict[tuple[str, str, str], int] = {}
    out: dict[tuple[str, str, str], datetime] = {}
    for unit, obligation, period, count, moment in rows:
        key = (unit, obligation, period)
        if key in out:
            continue
        running[key] = running.get(key, 0) + count
        if running[key] >= minimum.get((obligation, period), 1):
            out[key] = moment
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
