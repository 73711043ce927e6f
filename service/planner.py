"""The planner: which messages are due in (since, now] — a pure function.

Inputs are the loaded campaign (through its :class:`~service.steps.Timeline`), the
submission counts as of ``now``, the end of the previous planning window and ``now``.

An *item* is one reason to write to one person (obligation × period × unit × step). A
*message* bundles every item one recipient is owed on one channel at one moment (product
decision: at most one message per person per channel per moment). The bundle's moment is
the step's moment moved into the channel's sending window; an item planned after its
window period passed (downtime, a first start mid-campaign) joins the catch-up bundle at
the opening of the current window period, so one recipient's backlog is one message, and
every replica planning during that period names it the same. Keys derive from
(campaign, moment, recipient, channel) only; the outbox merges the items of two planners
that insert the same key (see ``Outbox.insert``).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .counts import CountTable
from .directory import Person
from .errors import CalendarRangeError
from .status import Counts
from .steps import Kind, Step, Timeline, window_floor, window_open

# Most urgent first: a bundle takes the kind of its most urgent item.
URGENCY: dict[str, int] = {"escalation": 0, "overdue": 1, "reminder": 2, "notice": 3, "digest": 4}

# (kind, obligation, period, unit, step name, expires_at): one reason to write.
Item = tuple[str, str, str, str, str, datetime]


def _urgency_key(item: Item) -> tuple[int, str, str, str, str]:
    return URGENCY[item[0]], item[1], item[2], item[3], item[4]


def most_urgent(kinds: Iterator[str] | list[str]) -> str:
    return min(kinds, key=URGENCY.__getitem__)


# Not frozen: a catch-up creates millions, and a frozen dataclass's __init__ (one
# object.__setattr__ per field) costs three times a slotted one. Nothing mutates them.
@dataclass(slots=True)
class PlannedMessage:
    key: str
    kind: Kind
    step: str
    obligation: str | None
    periods: tuple[str, ...]  # occurrence keys (obligation@period) the message is about
    units: tuple[str, ...]
    recipient_id: str
    channel: str
    address: str
    due_at: datetime
    next_attempt_at: datetime
    expires_at: datetime
    status: str = "pending"  # or "stale" when planned after it stopped making sense
    reason: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    messages: list[PlannedMessage] = field(default_factory=list)
    superseded_digests: int = 0


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while one step's messages are built (they form no cycles).

    A step at national scale allocates ~10^5 messages and tuples; each allocation burst
    triggers collections that traverse every live object, the whole directory included.
    Measured on a 20,000-unit full-campaign plan (2.2 M messages): 10.0 s with GC, 5.8 s
    without. The young objects are collected (once) when GC resumes.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _address(person: Person, channel: str) -> str | None:
    return person.email if channel == "email" else person.mobile


class Planner:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.model = timeline.model
        camp = self.model.schedule.campaign
        self._camp = camp
        # ancestor chains let one pass over overdue items feed every supervisor's digest
        self._people = {p.id: p for p in self.model.directory.people}
        units = self.model.directory.units
        self._ancestors: dict[str, list[str]] = {}
        for uid in units:
            chain, cur = [], uid
            while cur:
                chain.append(cur)
                cur = units[cur].parent or ""
            self._ancestors[uid] = chain
        self._role_cache: dict[str, dict[str, list[Person]]] = {}

    def _by_role(self, role: str) -> dict[str, list[Person]]:
        """Unit -> its people in ``role`` (a step notifies one role), built once per role."""
        got = self._role_cache.get(role)
        if got is None:
            got = self._role_cache[role] = {
                unit: [p for p in people if p.role == role]
                for unit, people in self.model.directory.people_by_unit.items()
            }
        return got

    def plan(self, counts: Counts, since: datetime | None, now: datetime) -> Plan:
        plan = Plan()
        with _gc_paused():  # as in iter_plan, for the whole (all-in-memory) plan
            for chunk in self.iter_plan(counts, since, now):
                plan.messages += chunk
        return plan

    def iter_plan(
        self, counts: Counts, since: datetime | None, now: datetime
    ) -> Iterator[list[PlannedMessage]]:
        """The same plan, one bundle moment at a time: a national catch-up plans millions
        of items, which the caller inserts as they come instead of holding them all.

        Steps come in moment order and a bundle's moment never decreases with the step's,
        so a bundle is complete (and yielded) once a step opens after its moment.
        """
        now = min(now, self.timeline.end)
        channels = sorted({c for st in self.timeline.steps for c in st.channels} | {"email"})
        floors = {ch: self._floor(now, ch) for ch in channels}
        acc: dict[tuple[str, datetime, bool], dict[str, list[Item]]] = {}
        owing: dict[tuple[str, str], list[str]] = {}
        for step in self.timeline.steps_between(since, now):
            opens = {ch: self._open(step.moment, ch) for ch in channels}
            ready = [k for k in acc if opens[k[0]] is None or k[1] < opens[k[0]]]  # type: ignore[operator]
            if ready:
                with _gc_paused():
                    bundles = self._bundles({k: acc.pop(k) for k in ready}, now)
                yield bundles
            timing = {
                ch: self._timing(step.moment, step.expires_at, ch, now, opens[ch], floors[ch])
                for ch in step.channels
            }
            with _gc_paused():
                self._collect(step, counts, timing, acc, owing)
        if acc:
            with _gc_paused():
                bundles = self._bundles(acc, now)
            yield bundles
        slot = self.timeline.latest_slot(since, now)
        if slot is not None:
            yield self.digest_messages(slot, counts, now, owing)

    def _open(self, moment: datetime, channel: str) -> datetime | None:
        """The first instant at or after ``moment`` in the channel's window (None: none)."""
        try:
            return window_open(
                moment, self._camp.window(channel), self.model.calendar, self._camp.tz
            )
        except (CalendarRangeError, ValueError):
            return None  # past the holiday data / no window: nothing can be sent then

    def _floor(self, now: datetime, channel: str) -> datetime | None:
        try:
            return window_floor(now, self._camp.window(channel), self.model.calendar, self._camp.tz)
        except (CalendarRangeError, ValueError):
            return None

    def _timing(
        self,
        moment: datetime,
        expires: datetime,
        channel: str,
        now: datetime,
        opens: datetime | None,
        floor: datetime | None,
    ) -> tuple[datetime, str, str]:
        """(bundle moment, status, reason) of one step's items on one channel.

        Items wait for the channel's window; items whose window period already passed
        (downtime) join the catch-up bundle at ``floor``; late plans are stale.
        """
        if now > expires:
            return (
                opens or moment,
                "stale",
                (
                    f"planned at {now.isoformat()}, after it stopped making sense "
                    f"({expires.isoformat()}); the service was not running at {moment.isoformat()}"
                ),
            )
        if opens is None or opens > expires:
            return opens or moment, "stale", "no sending window before it stops making sense"
        bundle_at = opens if floor is None else max(opens, floor)
        if bundle_at > expires:
            return opens, "stale", "no sending window before it stops making sense"
        return bundle_at, "pending", ""

    def _collect(
        self,
        step: Step,
        counts: Counts,
        timing: Mapping[str, tuple[datetime, str, str]],
        acc: dict[tuple[str, datetime, bool], dict[str, list[Item]]],
        owing: dict[tuple[str, str], list[str]],
    ) -> None:
        """Add one step's items to the recipients' bundles (``acc``).

        ``owing`` caches, per occurrence, the units still short of its quota: an
        occurrence has several steps (reminders, overdue, escalation) asking the same.
        """
        # A national catch-up makes millions of these: everything that depends on the step
        # alone is looked up once here, not once per unit or message.
        get = counts.get
        kind, name, obligation, notify = step.kind, step.name, step.obligation, step.notify
        expires = step.expires_at
        targets = [
            (ch == "email", acc.setdefault((ch, at, status == "stale"), {}))
            for ch, (at, status, _) in timing.items()
        ]
        notified = self._by_role(notify)
        occurrences = [(o.obligation, o.period, o.quota_min) for o in step.occurrences]
        single = occurrences[0] if len(occurrences) == 1 else None
        if kind == "notice":
            units: Iterable[str] = self.model.owers[obligation]
        elif single is not None:  # most steps: one occurrence, shared by its several steps
            units = self._owing(owing, single, counts)
        else:
            units = self.model.owers[obligation]
        every = kind == "notice" or single is not None  # else: per unit, what is still short
        for unit in units:
            if every:
                owed = occurrences
            else:  # only the occurrences still short of their quota: never remind a submitter
                owed = [o for o in occurrences if get((unit, o[0], o[1]), 0) < o[2]]
                if not owed:
                    continue
            items = [(kind, ob, per, unit, name, expires) for ob, per, _ in owed]
            for person in notified.get(unit, ()):
                for email, bundles in targets:
                    if (person.email if email else person.mobile) is None:
                        continue
                    got = bundles.get(person.id)
                    if got is None:
                        bundles[person.id] = list(items)
                    else:
                        got += items

    def _owing(
        self,
        cache: dict[tuple[str, str], list[str]],
        occurrence: tuple[str, str, int],
        counts: Counts,
    ) -> list[str]:
        """The units owing ``occurrence`` that are still short of its quota, found once per
        plan (``cache``): an occurrence's reminders, overdue notice, escalation and the
        digest all ask."""
        obligation, period, need = occurrence
        got = cache.get((obligation, period))
        if got is None:
            got = cache[(obligation, period)] = self._still_short(obligation, period, need, counts)
        return got

    def _still_short(self, obligation: str, period: str, need: int, counts: Counts) -> list[str]:
        owers = self.model.owers[obligation]
        if isinstance(counts, CountTable):  # the occurrence's row once: no tuple per unit
            row, position = counts.row(obligation, period)
            if row is None:
                return list(owers)  # nobody submitted it yet
            out = []
            for unit in owers:
                i = position.get(unit)
                if i is None or row[i] < need:
                    out.append(unit)
            return out
        get = counts.get
        return [u for u in owers if get((u, obligation, period), 0) < need]

    def _bundles(
        self, groups: Mapping[tuple[str, datetime, bool], Mapping[str, list[Item]]], now: datetime
    ) -> list[PlannedMessage]:
        """One message per (channel, moment, recipient) group, with a deterministic key."""
        out: list[PlannedMessage] = []
        tz, camp = self._camp.tz, self._camp.key
        people = self._people
        iso: dict[datetime, str] = {}  # a catch-up has millions of items and a few expiries
        reasons: dict[tuple[datetime, datetime], str] = {}
        # One item goes to several bundles (liaison and head, e-mail and SMS): its dict and
        # its occurrence key are built once and shared (nothing mutates them).
        shared: dict[Item, dict[str, Any]] = {}
        occ_keys: dict[tuple[str, str], str] = {}

        def as_dict(it: Item) -> dict[str, Any]:
            d = shared.get(it)
            if d is None:
                expires = iso.get(it[5])
                if expires is None:
                    expires = iso[it[5]] = it[5].isoformat()
                d = shared[it] = {
                    "obligation": it[1],
                    "period": it[2],
                    "unit": it[3],
                    "step": it[4],
                    "kind": it[0],
                    "expires": expires,
                }
            return d

        def occ_key(obligation: str, period: str) -> str:
            k = occ_keys.get((obligation, period))
            if k is None:
                k = occ_keys[(obligation, period)] = f"{obligation}@{period}"
            return k

        get_dict = shared.get
        for (channel, at, stale), recipients in groups.items():
            prefix = f"{camp}/{at.astimezone(tz).strftime('%Y-%m-%dT%H:%M')}/"
            suffix = f"/{channel}/stale" if stale else f"/{channel}"
            status = "stale" if stale else "pending"
            email = channel == "email"
            for pid, items in recipients.items():
                person = people[pid]
                address = person.email if email else person.mobile
                if address is None:
                    continue
                if len(items) == 1:  # most bundles of a national catch-up: no sets, no sort
                    first = items[0]
                    expires, one_obligation = first[5], True
                    periods: tuple[str, ...] = (occ_key(first[1], first[2]),)
                    units: tuple[str, ...] = (first[3],)
                    dicts = [get_dict(first) or as_dict(first)]
                else:
                    items.sort(key=_urgency_key)
                    first = items[0]
                    expires = max(it[5] for it in items)
                    one_obligation = all(it[1] == first[1] for it in items)
                    periods = tuple(sorted({occ_key(it[1], it[2]) for it in items}))
                    units = tuple(sorted({it[3] for it in items}))
                    dicts = [get_dict(it) or as_dict(it) for it in items]
                reason = ""
                if stale:
                    reason = reasons.get((expires, at)) or reasons.setdefault(
                        (expires, at), self._stale_reason(now, expires, at)
                    )
                out.append(
                    PlannedMessage(
                        prefix + pid + suffix,
                        first[0],  # type: ignore[arg-type]
                        first[4],
                        first[1] if one_obligation else None,
                        periods,
                        units,
                        pid,
                        channel,
                        address,
                        at,
                        at,
                        expires,
                        status,
                        reason,
                        dicts,
                    )
                )
        return out

    @staticmethod
    def _stale_reason(now: datetime, expires: datetime, at: datetime) -> str:
        if now > expires:
            return (
                f"planned at {now.isoformat()}, after it stopped making sense "
                f"({expires.isoformat()}); the service was not running at {at.isoformat()}"
            )
        return "no sending window before it stops making sense"

    def overdue_for_digest(
        self,
        slot: datetime,
        counts: Counts,
        owing: dict[tuple[str, str], list[str]] | None = None,
    ) -> dict[str, list[tuple[str, str]]]:
        """Scope unit -> [(unit, occurrence key)] overdue and past the supervisors' gate.

        ``owing`` is the plan's cache of units still owing each occurrence (the steps
        asked it already)."""
        owing = {} if owing is None else owing
        by_scope: dict[str, list[tuple[str, str]]] = defaultdict(list)
        ancestors = self._ancestors
        for gate in self.timeline.gates:
            if gate.moment > slot:
                continue
            occ = gate.occurrence
            units = self._owing(owing, (occ.obligation, occ.period, occ.quota_min), counts)
            entry_key = occ.key
            for unit in units:
                entry = (unit, entry_key)
                for ancestor in ancestors[unit]:
                    by_scope[ancestor].append(entry)
        return by_scope

    def digest_messages(
        self,
        slot: datetime,
        counts: Counts,
        now: datetime,
        owing: dict[tuple[str, str], list[str]] | None = None,
    ) -> list[PlannedMessage]:
        spec = self._camp.digest
        by_scope = self.overdue_for_digest(slot, counts, owing)
        nxt = self.timeline.next_slot_after(slot)
        expires = min(nxt, self.timeline.end) if nxt else self.timeline.end
        tz = self._camp.tz
        stamp = slot.astimezone(tz).strftime("%Y-%m-%dT%H:%M")
        out = []
        weekday = slot.astimezone(tz).strftime("%A").lower()
        for person in self.model.directory.supervisors():
            entries = by_scope.get(person.scope or "", [])
            if not entries:
                continue
            cadence = spec.cadence_of(person.id)
            if cadence.startswith("weekly:") and cadence != f"weekly:{weekday}":
                continue  # a weekly reader gets the list on their weekday only
            units = tuple(sorted({u for u, _ in entries}))
            periods = tuple(sorted({k for _, k in entries}))  # fmt: skip
            # One item per occurrence listing its units: a national digest names ~10^5
            # (unit, period) pairs, and a dict for each would dominate a busy cycle.
            by_occ: dict[str, list[str]] = defaultdict(list)
            for u, k in entries:
                by_occ[k].append(u)
            until = expires.isoformat()
            items = [
                {"obligation": k.partition("@")[0], "period": k.partition("@")[2],
                 "units": sorted(us), "step": "digest", "kind": "digest", "expires": until}
                for k, us in sorted(by_occ.items())
            ]  # fmt: skip
            for channel in spec.channels:
                address = _address(person, channel)
                if address is None:
                    continue
                key = f"{self._camp.key}/digest/{stamp}/{person.scope}/digest/{person.id}/{channel}"
                next_at, status, reason = self._digest_timing(slot, expires, nxt, channel, now)
                out.append(
                    PlannedMessage(
                        key=key,
                        kind="digest",
                        step="digest",
                        obligation=None,
                        periods=periods,
                        units=units,
                        recipient_id=person.id,
                        channel=channel,
                        address=address,
                        due_at=slot,
                        next_attempt_at=next_at,
                        expires_at=expires,
                        status=status,
                        reason=reason,
                        items=items,
                    )
                )
        return out

    def _digest_timing(
        self,
        slot: datetime,
        expires: datetime,
        nxt: datetime | None,
        channel: str,
        now: datetime,
    ) -> tuple[datetime, str, str]:
        """A missed digest goes out in the window of its own day, or gives way to the next.

        After downtime, yesterday's list sent this morning an hour before today's would be
        the same list twice: the next slot carries it.
        """
        opens = self._open(max(slot, now), channel)
        if now > expires:
            return slot, "stale", f"planned at {now.isoformat()}, after the next digest slot"
        if opens is None or opens > expires:
            return slot, "stale", "no sending window before the next digest"
        tz = self._camp.tz
        if nxt is not None and opens.astimezone(tz).date() != slot.astimezone(tz).date():
            return slot, "stale", f"missed; the next digest ({nxt.isoformat()}) carries it"
        return opens, "pending", ""
