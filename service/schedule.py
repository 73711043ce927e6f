"""The campaign schedule: YAML format, validation with located errors, and loading."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError, Problem
from .sources import line_of, load_yaml, problems_from_validation, refuse_control, to_plain
from .workdays import HolidayPolicy, WorkdayCalendar

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]
ChannelName = Literal["email", "sms"]
MAX_CAMPAIGN_DAYS = 3 * 366
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _local_time(value: Any) -> Any:
    """Times of day are "HH:MM" local to the campaign: no offsets, no seconds counts."""
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if isinstance(value, str) and (m := _HHMM.match(value.strip())):
        return time(int(m.group(1)), int(m.group(2)))
    raise ValueError('expected a local time of day as "HH:MM" (quoted), e.g. "17:00"')


LocalTime = Annotated[time, BeforeValidator(_local_time)]
MULTILINE_FIELDS = frozenset({"how_to_submit", "form"})
_YEAR_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        # Text reaches headers, SMS, spreadsheets and the database: no control characters;
        # line breaks only where a field may span lines (how to submit, form).
        return refuse_control(value, multiline=info.field_name in MULTILINE_FIELDS)


class SendingWindow(Strict):
    """When messages may go out: local time, working days by default.

    The campaign's ``sending_window`` applies to every channel (catch-up e-mail included:
    nobody gets a backlog at midnight or on a holiday); ``sending_windows`` overrides it
    per channel.
    """

    start: LocalTime = time(8, 0)
    end: LocalTime = time(20, 0)
    working_days_only: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> SendingWindow:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class WorkdaysSpec(Strict):
    extra_holidays: list[date] = []
    extra_workdays: list[date] = []
    own_years: list[int] = Field(
        default=[],
        description="years whose holidays the schedule lists itself (beyond the data package)",
    )


class OfficeContact(Strict):
    office: str
    people: str
    phone: str
    email: str
    address: str = ""


# daily | changes (only when something is new or resolved) | weekly:<weekday name>
Cadence = Annotated[
    str,
    Field(
        pattern=r"^(daily|changes|weekly:(monday|tuesday|wednesday|thursday|friday|saturday|sunday))$"
    ),
]


class DigestSpec(Strict):
    """Supervisors' overdue digests: one per supervisor per run."""

    at: list[LocalTime] = [time(9, 30)]
    working_days_only: bool = True
    channels: list[ChannelName] = ["email"]
    attachment: Literal["csv", "xlsx", "none"] = "xlsx"
    cadence: Cadence = "daily"
    cadence_by_person: dict[str, Cadence] = {}  # person id -> cadence
    long_overdue_days: int = Field(default=10, ge=1)  # working days: "长期未报" beyond
    max_rows: int = Field(default=30, ge=1)  # longer lists: counts in the body, rows attached

    def cadence_of(self, person_id: str) -> str:
        return self.cadence_by_person.get(person_id, self.cadence)


class Campaign(Strict):
    key: Slug
    name: str
    timezone: str = "Asia/Shanghai"
    start: date
    end: date
    due_time: LocalTime = time(17, 0)
    workdays: WorkdaysSpec = WorkdaysSpec()
    sending_window: SendingWindow = SendingWindow()
    sending_windows: dict[ChannelName, SendingWindow] = {}
    channels: list[ChannelName] = ["email", "sms"]
    sms_daily_cap: int = Field(default=2, ge=0, le=50)
    contact: OfficeContact
    digest: DigestSpec = DigestSpec()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Campaign:
        if self.start > self.end:
            raise ValueError("start must not be after end")
        if (self.end - self.start).days > MAX_CAMPAIGN_DAYS:
            raise ValueError(f"a campaign spans at most {MAX_CAMPAIGN_DAYS} days")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def window(self, channel: str) -> SendingWindow:
        """The sending window of one channel (the campaign's unless overridden)."""
        for name, window in self.sending_windows.items():
            if name == channel:
                return window
        return self.sending_window


class Selector(Strict):
    """Which units owe an obligation: the union of the listed kinds, tags and ids."""

    kinds: list[str] = []
    tags: list[str] = []
    units: list[str] = []
    exclude: list[str] = []

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not (self.kinds or self.tags or self.units):
            raise ValueError("name at least one of kinds, tags or units")
        return self


def _weekday_name(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # Numbers mean Monday=0 in APScheduler 3 but Sunday=0 in cron: refuse both.
        raise ValueError("weekdays are given by name (e.g. friday), never by number")
    return value.lower() if isinstance(value, str) else value


class Once(Strict):
    type: Literal["once"]
    date: date


class Weekly(Strict):
    type: Literal["weekly"]
    weekday: Weekday
    start: date
    end: date

    _names = field_validator("weekday", mode="before")(_weekday_name)

    @model_validator(mode="after")
    def _ordered(self) -> Weekly:
        if self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class Monthly(Strict):
    type: Literal["monthly"]
    start: str = Field(description="first month, YYYY-MM")
    end: str = Field(description="last month, YYYY-MM")
    day: int | Literal["last"] = "last"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _year_month(cls, value: Any) -> str:
        text = str(value)
        if not _YEAR_MONTH.match(text):
            raise ValueError("expected a month as YYYY-MM (quote it in YAML)")
        return text

    @field_validator("day")
    @classmethod
    def _day_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 31:
            raise ValueError("day must be 1..31 or 'last'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Monthly:
        if self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class Event(Strict):
    """A dated happening to announce; nothing is submitted."""

    type: Literal["event"]
    date: date
    at: LocalTime


Recurrence = Annotated[Once | Weekly | Monthly | Event, Field(discriminator="type")]


class Quota(Strict):
    min: int = Field(default=1, ge=1)
    target: int | None = None

    @model_validator(mode="after")
    def _target(self) -> Quota:
        if self.target is not None and self.target < self.min:
            raise ValueError("target must be at least min")
        return self

    @property
    def goal(self) -> int:
        return self.target if self.target is not None else self.min


class Reminder(Strict):
    """A reminder (or an event notice) ``days`` before the due date at ``at``."""

    days: int = Field(ge=0, le=60)
    count: Literal["working", "calendar"] = "working"
    at: LocalTime = time(9, 0)
    channels: list[ChannelName] | None = None


class EscalationStep(Strict):
    """After the due moment: who is told, when."""

    after_days: int = Field(ge=0, le=60)
    count: Literal["working", "calendar"] = "working"
    at: LocalTime = time(9, 0)
    notify: Literal["liaison", "head", "supervisors"]
    channels: list[ChannelName] | None = None


# -- forms (issue 11): what a unit fills in and sends, declared as data ------------------
FieldType = Literal["text", "integer", "phone", "email", "date"]


class FormField(Strict):
    """One column of a form. ``label`` is what the sheet's header says (the fingerprint)."""

    key: Slug
    label: str = Field(min_length=1, max_length=40)
    type: FieldType = "text"
    unit: str = Field(default="", max_length=8, description="unit of measure, e.g. 场, 人次")
    required: bool = False
    allowed: list[str] = Field(default=[], description="allowed values (text fields)")
    aliases: list[str] = Field(default=[], description="other header spellings seen in use")


class Form(Strict):
    """A form an obligation asks for (the notice's 附件N), its fields in column order."""

    attachment: str = Field(min_length=1, max_length=16, description="e.g. 附件1")
    title: str = Field(min_length=1)
    fields: list[FormField] = Field(min_length=1)
    unit_field: str = Field(default="", description="key of the field naming the unit")
    # A filled copy proposes the unit's liaison (fields liaison_name, mobile, email) to the
    # office, which confirms it in `service review` (附件1).
    proposes_liaison: bool = False
    # Reminder and overdue e-mails for this obligation attach the blank form, the unit's
    # name filled in (once per form and unit per e-mail). true or false, nothing else.
    attach_to_reminders: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self) -> Form:
        keys = [f.key for f in self.fields]
        labels = [label for f in self.fields for label in (f.label, *f.aliases)]
        if len(set(keys)) != len(keys):
            raise ValueError("field keys must be unique")
        if len(set(labels)) != len(labels):
            raise ValueError("field labels (and aliases) must be unique")
        if self.unit_field and self.unit_field not in keys:
            raise ValueError(f"unit_field {self.unit_field!r} is not a field key")
        if self.proposes_liaison and not {"liaison_name", "mobile", "email"} <= set(keys):
            raise ValueError("proposes_liaison needs fields liaison_name, mobile and email")
        return self

    def __str__(self) -> str:
        # Reminders show the form's name where the schedule used to give a plain string.
        return f"{self.attachment} {self.title}"


# A plain string (the form's name only) or a declared form; a mapping is always a Form, so
# its errors are reported without the noise of the string alternative.
FormSpec = Annotated[
    Annotated[str, Tag("name")] | Annotated[Form, Tag("form")],
    Discriminator(lambda v: "name" if isinstance(v, str) else "form"),
]


class Obligation(Strict):
    key: Slug
    title: str
    short_title: str = Field(default="", max_length=12, description="for SMS variables")
    who: Selector
    recurrence: Recurrence
    quota: Quota = Quota()
    due_time: LocalTime | None = None
    holiday_policy: HolidayPolicy = HolidayPolicy.PREVIOUS_WORKING_DAY
    reminders: list[Reminder] = []
    escalation: list[EscalationStep] = []
    how_to_submit: str = ""
    form: FormSpec = ""

    @property
    def sms_title(self) -> str:
        return self.short_title or self.title[:8]

    @property
    def is_event(self) -> bool:
        return isinstance(self.recurrence, Event)


class Schedule(Strict):
    campaign: Campaign
    obligations: list[Obligation]

    def campaign_end_moment(self) -> datetime:
        """The first instant after the campaign's last day."""
        camp = self.campaign
        return datetime.combine(camp.end + timedelta(days=1), time(0), tzinfo=camp.tz)

    def obligation(self, key: str) -> Obligation:
        for ob in self.obligations:
            if ob.key == key:
                return ob
        raise KeyError(key)

    def calendar(self, source: str = "schedule") -> WorkdayCalendar:
        spec = self.campaign.workdays
        return WorkdayCalendar(
            extra_holidays=spec.extra_holidays,
            extra_workdays=spec.extra_workdays,
            own_years=spec.own_years,
            source=source,
        )


def parse_schedule(path: Path, text: str | None = None) -> Schedule:
    """Load and validate a schedule; every problem names the file, line and field."""
    doc = load_yaml(path, text)
    if not isinstance(doc, dict):
        raise ConfigError(
            [Problem(str(path), 1, "", "expected a mapping with campaign and obligations")]
        )
    try:
        # Top-level "x-" keys hold YAML anchors shared by obligations (as in Compose files).
        plain = {k: v for k, v in to_plain(doc).items() if not k.startswith("x-")}
        schedule = Schedule.model_validate(plain)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(path, doc, exc)) from None
    problems = _semantic_problems(schedule, doc, str(path))
    if problems:
        raise ConfigError(problems)
    return schedule


def _recurrence_span(rec: Once | Weekly | Monthly | Event) -> tuple[date, date]:
    if isinstance(rec, Weekly):
        return rec.start, rec.end
    if isinstance(rec, Monthly):
        return date(int(rec.start[:4]), int(rec.start[5:]), 1), date(
            int(rec.end[:4]), int(rec.end[5:]), 1
        )
    return rec.date, rec.date


def _semantic_problems(schedule: Schedule, doc: Any, path: str) -> list[Problem]:
    """Checks that need the whole schedule: unique keys, dates, holiday-data coverage."""
    from .occurrences import expand  # local: occurrences imports this module

    camp = schedule.campaign
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, ob in enumerate(schedule.obligations):
        if ob.key in seen:
            problems.append(
                Problem(
                    path,
                    line_of(doc, ["obligations", index, "key"]),
                    f"obligations[{index}].key",
                    f"obligation key {ob.key!r} is used twice",
                )
            )
        seen.add(ob.key)
    # The whole campaign must be covered by holiday data (or own_years), whatever the
    # holiday policies, because reminders and escalations count working days.
    cal = schedule.calendar(path)
    for day in (camp.start + timedelta(days=n) for n in range((camp.end - camp.start).days + 1)):
        try:
            cal.is_workday(day)
        except ConfigError as exc:
            problems += [
                Problem(path, line_of(doc, ["campaign", "end"]), "campaign.workdays", p.message)
                for p in exc.problems
            ]
            return problems
    month_start = camp.start.replace(day=1)
    for index, ob in enumerate(schedule.obligations):
        where = f"obligations[{index}].recurrence"
        line = line_of(doc, ["obligations", index, "recurrence"])
        first, last = _recurrence_span(ob.recurrence)
        if first < month_start or last > camp.end:
            problems.append(
                Problem(
                    path,
                    line,
                    where,
                    f"dates {first}..{last} fall outside the campaign {camp.start}..{camp.end}",
                )
            )
            continue
        try:
            occurrences = expand(schedule, ob, cal)
        except ConfigError as exc:
            problems += [Problem(path, line, where, p.message) for p in exc.problems]
            continue
        problems += [
            Problem(
                path,
                line,
                where,
                f"{occ.key} is due {occ.due_date}, outside the campaign {camp.start}..{camp.end}",
            )
            for occ in occurrences
            if not camp.start <= occ.due_date <= camp.end
        ]
    return problems
