"""The loaded campaign: schedule + directory + calendar + occurrences, cross-checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .directory import Directory, check_selectors, load_directory
from .errors import ConfigError, Problem
from .occurrences import Occurrence, all_occurrences
from .schedule import Schedule, parse_schedule
from .workdays import WorkdayCalendar


@dataclass
class CampaignModel:
    """Everything derived from the input files; immutable once built."""

    schedule: Schedule
    directory: Directory
    calendar: WorkdayCalendar
    occurrences: list[Occurrence]
    owers: dict[str, list[str]]  # obligation key -> unit ids that owe it
    _by_key: dict[str, Occurrence] = field(default_factory=dict, repr=False)
    _owing: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {o.key: o for o in self.occurrences}
        # Membership tests against ``owers`` lists are O(units): keep a set per obligation
        # (obligations that select the same units share one).
        shared: dict[frozenset[str], frozenset[str]] = {}
        for key, units in self.owers.items():
            owing = frozenset(units)
            self._owing[key] = shared.setdefault(owing, owing)

    @property
    def key(self) -> str:
        return self.schedule.campaign.key

    def owes(self, unit: str, obligation: str) -> bool:
        """Whether ``unit`` owes ``obligation`` (``owers`` keeps the directory's order)."""
        return unit in self._owing[obligation]

    def occurrence(self, obligation: str, period: str) -> Occurrence | None:
        return self._by_key.get(f"{obligation}@{period}")

    def warnings(self) -> list[str]:
        """Gaps that would make reminders silently go nowhere: units owing work without a
        liaison, units with a head escalation but no head, supervisors without email."""
        out = []
        owing = {uid for units in self.owers.values() for uid in units}
        needs_head = {
            uid
            for ob in self.schedule.obligations
            if any(step.notify == "head" for step in ob.escalation)
            for uid in self.owers[ob.key]
        }
        for uid in sorted(owing):
            if not self.directory.people_of(uid, "liaison"):
                out.append(f"unit {uid} owes obligations but has no liaison: nobody is reminded")
            if uid in needs_head and not self.directory.people_of(uid, "head"):
                out.append(f"unit {uid} has no head: head escalations for it go nowhere")
        out += [
            f"supervisor {p.id} has no email address: digests are sent by email"
            for p in self.directory.supervisors()
            if not p.email and "email" in self.schedule.campaign.digest.channels
        ]
        return out + self.holiday_warnings()

    def holiday_warnings(self) -> list[str]:
        """A year the schedule claims (own_years) beyond the holiday data but whose holidays
        it does not list: every day of it would count as a plain weekday/weekend."""
        spec = self.schedule.campaign.workdays
        lo, hi = self.calendar.data_range
        listed = {d.year for d in spec.extra_holidays}
        adjusted = {d.year for d in spec.extra_workdays}
        out = []
        for year in sorted(set(spec.own_years)):
            if lo <= year <= hi or year in listed:
                continue
            out.append(
                f"{year} 年超出节假日数据（{lo}–{hi}），已列入 campaign.workdays.own_years，"
                f"但 campaign.workdays.extra_holidays 未列出 {year} 年的任何节假日"
                + ("" if year in adjusted else "（extra_workdays 也没有调休日）")
                + "：该年的法定节假日将被当作工作日"
            )
        return out

    def unit_index(self) -> dict[str, int]:
        """Positions of units, for compact per-occurrence count tables."""
        return {uid: i for i, uid in enumerate(self.directory.units)}

    def submittable(self) -> list[Occurrence]:
        return [o for o in self.occurrences if o.kind != "event"]


def build_model(
    schedule: Schedule, directory: Directory, source: str = "schedule"
) -> CampaignModel:
    selectors = [
        (f"{source}: obligations[{i}] ({ob.key})", ob.who)
        for i, ob in enumerate(schedule.obligations)
    ]
    problems = check_selectors(directory, selectors)
    for person in directory.supervisors():
        if person.scope and person.scope not in directory.units:
            problems.append(Problem("people", None, "scope", f"unknown unit {person.scope!r}"))
    supervisors = {p.id for p in directory.supervisors()}
    for pid in schedule.campaign.digest.cadence_by_person:
        if pid not in supervisors:
            problems.append(
                Problem(
                    source,
                    None,
                    f"campaign.digest.cadence_by_person.{pid}",
                    f"{pid!r} is not a supervisor in the directory",
                )
            )
    if problems:
        raise ConfigError(problems)
    calendar = schedule.calendar(source)
    return CampaignModel(
        schedule=schedule,
        directory=directory,
        calendar=calendar,
        occurrences=all_occurrences(schedule, calendar),
        owers={ob.key: directory.select(ob.who) for ob in schedule.obligations},
    )


def load_model(schedule_path: Path, contacts_dir: Path) -> CampaignModel:
    """Load and cross-check the schedule and directory; all problems are reported together."""
    problems: list[Problem] = []
    schedule = directory = None
    try:
        schedule = parse_schedule(schedule_path)
    except ConfigError as exc:
        problems += exc.problems
    try:
        directory = load_directory(contacts_dir)
    except ConfigError as exc:
        problems += exc.problems
    if problems or schedule is None or directory is None:
        raise ConfigError(problems)
    return build_model(schedule, directory, str(schedule_path))
