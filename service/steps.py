"""The moments a campaign acts at, derived from the schedule alone (pure).

A *step* is one planned moment of one obligation's occurrence group: a reminder before
the due date, an overdue reminder or escalation after it, or an event notice. Periods of
one obligation that a holiday shift folds onto the same due date form one group, so a
liaison gets one message naming both. Digest slots are the supervisors' moments.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import groupby
from typing import Literal

from .errors import CalendarRangeError
from .model import CampaignModel
from .occurrences import Occurrence
from .schedule import SendingWindow
from .workdays import WorkdayCalendar

Kind = Literal["reminder", "overdue", "escalation", "notice", "digest"]


@dataclass(frozen=True)
class Step:
    kind: Kind
    name: str  # unique within the obligation, part of the idempotency key
    moment: datetime
    expires_at: datetime  # after this, sending it would be nonsense (stale)
    notify: Literal["liaison", "head"]
    channels: tuple[str, ...]
    obligation: str
    occurrences: tuple[Occurrence, ...]  # the fold group, same due date

    @property
    def periods(self) -> tuple[str, ...]:
        return tuple(o.period for o in self.occurrences)


@dataclass(frozen=True)
class DigestGate:
    """From ``moment`` on, an overdue occurrence appears in supervisors' digests."""

    occurrence: Occurrence
    moment: datetime


def campaign_end(model: CampaignModel) -> datetime:
    """The first instant after the campaign: nothing is sent from here on."""
    return model.schedule.campaign_end_moment()


def _shift(cal: WorkdayCalendar, day: date, days: int, count: str) -> date:
    if count == "working":
        return cal.add_workdays(day, days)
    return day + timedelta(days=days)


def fold_groups(occurrences: list[Occurrence]) -> list[tuple[Occurrence, ...]]:
    """Occurrences of each obligation grouped by due date (holiday folds)."""
    key = lambda o: (o.obligation, o.due_date)  # noqa: E731
    return [tuple(g) for _, g in groupby(sorted(occurrences, key=key), key=key)]


def build_steps(model: CampaignModel) -> tuple[list[Step], list[DigestGate]]:
    camp = model.schedule.campaign
    tz, cal, end = camp.tz, model.calendar, campaign_end(model)
    default_channels = tuple(camp.channels)
    steps: list[Step] = []
    gates: list[DigestGate] = []
    for group in fold_groups(model.occurrences):
        first = group[0]
        ob = model.schedule.obligation(first.obligation)
        for i, rem in enumerate(ob.reminders):
            day = _shift(cal, first.due_date, -rem.days, rem.count)
            moment = datetime.combine(day, rem.at, tzinfo=tz)
            if moment > first.due_at or moment >= end:
                continue  # a "reminder" after the deadline is an escalation's job
            kind: Kind = "notice" if ob.is_event else "reminder"
            steps.append(
                Step(
                    kind,
                    f"{kind}{i + 1}-{rem.days}{rem.count[0]}d",
                    moment,
                    min(first.due_at, end),
                    "liaison",
                    tuple(rem.channels or default_channels),
                    ob.key,
                    group,
                )
            )
        for i, esc in enumerate(ob.escalation):
            try:
                day = _shift(cal, first.due_date, esc.after_days, esc.count)
            except CalendarRangeError:
                # Counting forward from a due date inside the data left it: the step falls
                # after the campaign's last day (which validation keeps inside the data),
                # so it would never be sent. Asking for next year's holidays is wrong.
                continue
            moment = max(datetime.combine(day, esc.at, tzinfo=tz), first.due_at)
            if moment >= end:
                continue
            if esc.notify == "supervisors":
                gates += [DigestGate(o, moment) for o in group]
                continue
            kind = "overdue" if esc.notify == "liaison" else "escalation"
            steps.append(
                Step(
                    kind,
                    f"{kind}{i + 1}-{esc.after_days}{esc.count[0]}d",
                    moment,
                    end,
                    esc.notify,
                    tuple(esc.channels or default_channels),
                    ob.key,
                    group,
                )
            )
    steps.sort(key=lambda s: (s.moment, s.obligation, s.name))
    return steps, gates


def digest_slots(model: CampaignModel) -> list[datetime]:
    camp = model.schedule.campaign
    spec, cal = camp.digest, model.calendar
    out = []
    day = camp.start
    while day <= camp.end:
        if not spec.working_days_only or cal.is_workday(day):
            out += [datetime.combine(day, at, tzinfo=camp.tz) for at in spec.at]
        day += timedelta(days=1)
    return sorted(out)


def window_open(
    moment: datetime, window: SendingWindow, cal: WorkdayCalendar, tz: object
) -> datetime:
    """The first instant at or after ``moment`` inside the sending window."""
    local = moment.astimezone(tz)  # type: ignore[arg-type]
    day = local.date()
    for _ in range(60):
        allowed = not window.working_days_only or cal.is_workday(day)
        if allowed:
            opens = datetime.combine(day, window.start, tzinfo=local.tzinfo)
            closes = datetime.combine(day, window.end, tzinfo=local.tzinfo)
            if local < closes:
                return max(local, opens)
        day += timedelta(days=1)
        local = datetime.combine(day, time(0), tzinfo=local.tzinfo)
    raise ValueError("no sending window within 60 days")


sms_window_open = window_open  # the name the dispatcher and older callers use


def window_floor(
    moment: datetime, window: SendingWindow, cal: WorkdayCalendar, tz: object
) -> datetime:
    """The opening of the window period ``moment`` falls in (or the next one, if closed).

    Every planner that runs during one window period (or the closed hours before it) gets
    the same answer: it names the catch-up bundle deterministically across replicas.
    """
    opens = window_open(moment, window, cal, tz)
    if opens > moment:
        return opens
    local = moment.astimezone(tz)  # type: ignore[arg-type]
    return datetime.combine(local.date(), window.start, tzinfo=local.tzinfo)


class Timeline:
    """All step moments and digest slots, sorted, for "what is due in (since, now]"."""

    def __init__(self, model: CampaignModel) -> None:
        self.model = model
        self.steps, self.gates = build_steps(model)
        self.slots = digest_slots(model)
        self.end = campaign_end(model)
        self._moments = [s.moment for s in self.steps]

    def steps_between(self, since: datetime | None, now: datetime) -> list[Step]:
        lo = 0 if since is None else bisect.bisect_right(self._moments, since)
        hi = bisect.bisect_right(self._moments, now)
        return self.steps[lo:hi]

    def latest_slot(self, since: datetime | None, now: datetime) -> datetime | None:
        """The newest digest slot in (since, now]; older missed slots are superseded."""
        i = bisect.bisect_right(self.slots, now)
        if i == 0:
            return None
        slot = self.slots[i - 1]
        return slot if since is None or slot > since else None

    def next_slot_after(self, moment: datetime) -> datetime | None:
        i = bisect.bisect_right(self.slots, moment)
        return self.slots[i] if i < len(self.slots) else None

    def next_moment(self, after: datetime) -> datetime | None:
        """The next instant strictly after ``after`` at which something may become due."""
        candidates = []
        i = bisect.bisect_right(self._moments, after)
        if i < len(self._moments):
            candidates.append(self._moments[i])
        if (slot := self.next_slot_after(after)) is not None:
            candidates.append(slot)
        return min(candidates) if candidates else None
