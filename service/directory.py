"""The directory of units and people: loading (CSV or YAML), validation, selection, scope."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .errors import ConfigError, Problem
from .schedule import Selector
from .sources import (
    iter_csv,
    line_of,
    load_yaml,
    problems_from_validation,
    refuse_control,
    to_plain,
)

Role = Literal["liaison", "head", "supervisor"]
UNIT_KINDS = ("province", "region", "county", "department", "enterprise", "office")


def _split_tags(value: Any) -> Any:
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    return value


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# Pydantic dataclasses with slots: validated like models, but a national directory of
# 100,000 units and 200,000 people stays small in memory.
_RECORD = ConfigDict(extra="forbid")


# Names reach e-mail headers, SMS variables and spreadsheets: one line, no control
# characters (sources.refuse_control), and a length no header or SMS can choke on.
MAX_UNIT_NAME = 200
MAX_PERSON_NAME = 100


def _printable(value: Any) -> Any:
    return refuse_control(value)


@pydantic_dataclass(frozen=True, slots=True, config=_RECORD)
class Unit:
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    name: Annotated[str, Field(min_length=1, max_length=MAX_UNIT_NAME)]
    kind: Literal["province", "region", "county", "department", "enterprise", "office"]
    parent: str | None = None
    tags: tuple[str, ...] = ()

    _tags = field_validator("tags", mode="before")(_split_tags)
    _parent = field_validator("parent", mode="before")(_blank_to_none)
    _text = field_validator("name", "tags", mode="after")(_printable)


@pydantic_dataclass(frozen=True, slots=True, config=_RECORD)
class Person:
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    name: Annotated[str, Field(min_length=1, max_length=MAX_PERSON_NAME)]
    unit: str
    role: Role
    scope: str | None = None  # supervisors: the unit whose subtree they oversee
    email: str | None = None
    mobile: str | None = None  # normalised to E.164

    _blank = field_validator("scope", "email", "mobile", mode="before")(_blank_to_none)
    _text = field_validator("name", mode="after")(_printable)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            normalized: str = validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email address: {exc}") from None
        if not normalized.isascii():
            # The mail writer cannot send to it (no SMTPUTF8): every message would fail.
            raise ValueError(
                "email address must be ASCII (internationalised addresses cannot be sent; "
                "use the punycode domain, e.g. xn--…)"
            )
        # Keep the file's string when it is already normal: one object, not two.
        return value if normalized == value else normalized

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            number = phonenumbers.parse(value, "CN")
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"not a phone number: {exc}") from None
        if (
            number.country_code != 86
            or phonenumbers.number_type(number)
            not in (
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
            )
            or not phonenumbers.is_valid_number(number)
        ):
            raise ValueError("not a valid mainland China mobile number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class Directory:
    """Units in a hierarchy and the people attached to them."""

    units: dict[str, Unit]
    people: list[Person]
    _children: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _by_unit: dict[str, list[Person]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for unit in self.units.values():
            if unit.parent:
                self._children.setdefault(unit.parent, []).append(unit.id)
        for person in self.people:
            self._by_unit.setdefault(person.unit, []).append(person)

    def subtree(self, root: str) -> list[str]:
        """``root`` and every unit below it, depth first."""
        out, stack = [], [root]
        while stack:
            uid = stack.pop()
            out.append(uid)
            stack.extend(reversed(self._children.get(uid, [])))
        return out

    def select(self, selector: Selector) -> list[str]:
        kinds, tags, ids = set(selector.kinds), set(selector.tags), set(selector.units)
        excluded = set(selector.exclude)
        return [
            u.id
            for u in self.units.values()
            if u.id not in excluded
            and (u.kind in kinds or ids.__contains__(u.id) or tags.intersection(u.tags))
        ]

    def people_of(self, unit: str, role: Role) -> list[Person]:
        return [p for p in self._by_unit.get(unit, ()) if p.role == role]

    @property
    def people_by_unit(self) -> Mapping[str, list[Person]]:
        """Unit id -> its people, in file order (read-only; the planner's hot loop)."""
        return self._by_unit

    def supervisors(self) -> list[Person]:
        return [p for p in self.people if p.role == "supervisor"]


# (record position, field name) -> line of that field in the file. A record's position
# is its CSV line, or its index in a YAML list: one int per row, not one closure per row
# (at 300,000 rows the closures alone were ~55 MB of the load's peak).
Locate = Callable[[int, str], "int | None"]


def _records(path: Path) -> tuple[Any, Locate, Iterable[tuple[int, Any]]]:
    """(YAML doc or None, locate, records): records with the position ``locate`` takes."""
    if path.suffix.lower() == ".csv":
        return None, (lambda line, _field: line), iter_csv(path)
    doc = load_yaml(path)
    if not isinstance(doc, list):
        raise ConfigError([Problem(str(path), 1, "", "expected a list of records")])
    return (
        doc,
        (lambda i, field: line_of(doc, [i, field])),
        [(i, to_plain(r)) for i, r in enumerate(doc)],
    )


def _load(path: Path, model: type[Any]) -> tuple[list[tuple[int, Any]], Locate, list[Problem]]:
    doc, locate, records = _records(path)
    adapter = TypeAdapter(model)
    out: list[tuple[int, Any]] = []
    problems: list[Problem] = []
    for where, record in records:
        if not isinstance(record, dict):
            problems.append(Problem(str(path), locate(where, ""), "", "expected a mapping"))
            continue
        try:
            out.append((where, adapter.validate_python(record)))
        except ValidationError as exc:
            if doc is None:  # CSV: the row number is the location, the column the field
                problems += [
                    Problem(str(path), where, ".".join(str(p) for p in e["loc"]), e["msg"])
                    for e in exc.errors(include_url=False)
                ]
            else:
                problems += problems_from_validation(path, doc, exc, prefix=[where])
    return out, locate, problems


def _find(folder: Path, stem: str) -> Path:
    for suffix in (".csv", ".yaml", ".yml"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise ConfigError(
        [Problem(str(folder / f"{stem}.csv"), None, "", "file not found (.csv, .yaml or .yml)")]
    )


def load_directory(folder: Path) -> Directory:
    """Load ``units`` and ``people`` (CSV or YAML) from ``folder``; all problems at once."""
    units_path, people_path = _find(folder, "units"), _find(folder, "people")
    unit_rows, uloc, problems = _load(units_path, Unit)
    people_rows, ploc, more = _load(people_path, Person)
    problems += more
    up, pp = str(units_path), str(people_path)
    units: dict[str, Unit] = {}
    for at, unit in unit_rows:
        if unit.id in units:
            problems.append(Problem(up, uloc(at, "id"), "id", f"duplicate unit id {unit.id!r}"))
        units[unit.id] = unit
    for at, unit in unit_rows:
        if unit.parent and unit.parent not in units:
            problems.append(
                Problem(up, uloc(at, "parent"), "parent", f"unknown unit {unit.parent!r}")
            )
    cyclic = _cyclic(units)
    problems += [
        Problem(up, uloc(at, "parent"), "parent", f"unit {unit.id!r} is in a parent cycle")
        for at, unit in unit_rows
        if unit.id in cyclic
    ]
    seen: set[str] = set()
    for at, person in people_rows:
        if person.id in seen:
            problems.append(Problem(pp, ploc(at, "id"), "id", f"duplicate person id {person.id!r}"))
        seen.add(person.id)
        if person.unit not in units:
            problems.append(Problem(pp, ploc(at, "unit"), "unit", f"unknown unit {person.unit!r}"))
        if person.scope and person.scope not in units:
            problems.append(
                Problem(pp, ploc(at, "scope"), "scope", f"unknown unit {person.scope!r}")
            )
        if person.role == "supervisor" and not person.scope:
            problems.append(
                Problem(pp, ploc(at, "scope"), "scope", "a supervisor needs a scope (a unit id)")
            )
        if not (person.email or person.mobile):
            problems.append(
                Problem(pp, ploc(at, "email"), "email", "give an email or a mobile number")
            )
    if problems:
        raise ConfigError(problems)
    return Directory(units=units, people=[p for _, p in people_rows])


def locate_people(folder: Path, ids: Iterable[str]) -> tuple[Path, dict[str, int]]:
    """The people file and the line of each of ``ids`` (read again: only on an error path,
    so the loaded directory keeps no line numbers)."""
    path = _find(folder, "people")
    wanted = set(ids)
    doc, locate, records = _records(path)
    lines: dict[str, int] = {}
    for where, record in records:
        if isinstance(record, dict) and record.get("id") in wanted:
            line = locate(where, "name")
            if line is not None:
                lines[str(record["id"])] = line
    return path, lines


def _cyclic(units: dict[str, Unit]) -> set[str]:
    """Units that are their own ancestor (not their descendants)."""
    out = set()
    for uid in units:
        seen, cur = set(), units[uid].parent
        while cur and cur in units and cur not in seen:
            if cur == uid:
                out.add(uid)
                break
            seen.add(cur)
            cur = units[cur].parent
    return out


def check_selectors(
    directory: Directory, selectors: Iterable[tuple[str, Selector]]
) -> list[Problem]:
    """Selector ids must exist; a selector that matches nobody is almost always a typo."""
    problems: list[Problem] = []
    for where, sel in selectors:
        problems.extend(
            Problem(where, None, "who", f"unknown unit {uid!r}")
            for uid in [*sel.units, *sel.exclude]
            if uid not in directory.units
        )
        if not directory.select(sel):
            problems.append(Problem(where, None, "who", "selects no unit of the directory"))
    return problems
