"""Bad input: malformed schedules, directories, submissions, CLI arguments and templates.

Every malformed input must end in a located :class:`ConfigError` (or, on the command line,
exit code 1/2 with the problem on stderr), never a traceback, and must leave the
submissions ledger exactly as it was. Templates that try to leave the Jinja sandbox are
refused by ``check_templates`` and ``service validate``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from service.cli import app
from service.directory import load_directory
from service.errors import ConfigError, Problem
from service.model import CampaignModel
from service.schedule import parse_schedule
from service.submissions import NewSubmission, load_submissions_csv
from service.templates import check_templates

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = ROOT / "schedules" / "jilin-2023.yaml"
CONTACTS = ROOT / "contacts"
TEMPLATES = ROOT / "templates"
SCHEDULE_TEXT = SCHEDULE.read_text(encoding="utf-8")
UNITS_CSV = (CONTACTS / "units.csv").read_text(encoding="utf-8")
PEOPLE_CSV = (CONTACTS / "people.csv").read_text(encoding="utf-8")
UNIT_IDS = [row["id"] for row in csv.DictReader(io.StringIO(UNITS_CSV))]
OBLIGATIONS = [
    "liaison-registration", "weekly-progress", "launch-ceremony", "consultation-day",
    "monthly-leads", "monthly-exposure", "activity-summary", "campaign-end",
]  # fmt: skip
PERIODS = [
    "2023-05-22", "2023-W21", "2023-W25", "2023-W26", "2023-W27", "2023-06", "2023-07",
    "2023-12", "2024-01", "2023-06-30", "2023-05-31",
]  # fmt: skip
SUBMISSION_COLUMNS = ["unit", "obligation", "period", "count", "at"]

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A failing example's report includes the (large) model fixture; keep that report readable
# under filterwarnings=error instead of turning it into a HypothesisWarning.
LARGE_REPR_OK = pytest.mark.filterwarnings("ignore:Generating overly large repr")
CLI_FUZZ = settings(  # each example runs the real CLI (~0.15 s): load, migrate, query
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- helpers --------------------------------------------------------------------------------


def physical_lines(text: str) -> int:
    """Lines of a file read with universal newlines (as the service reads it: a lone CR
    ends a line too); a final line break opens no new line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def assert_located(problems: list[Problem], lines_by_file: dict[str, int]) -> None:
    """Each problem names one of the files, a line inside it (or none) and says something."""
    assert problems
    for problem in problems:
        assert problem.file in lines_by_file, problem
        assert problem.line is None or 1 <= problem.line <= lines_by_file[problem.file], problem
        assert problem.message.strip(), problem


def ledger_rows(state_dir: Path) -> list[tuple[Any, ...]]:
    """Every submission and audit row, straight from the SQLite file."""
    with closing(sqlite3.connect(state_dir / "service.db")) as conn:
        subs = conn.execute("SELECT * FROM submissions ORDER BY id").fetchall()
        audit = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
    return [*subs, *audit]


def submission_count(state_dir: Path) -> int:
    with closing(sqlite3.connect(state_dir / "service.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM submissions").fetchone()[0])


def assert_no_traceback(result: Result) -> None:
    """Exit 0, 1 (invalid input) or 2 (usage) by design, never through an exception."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception),
        result.output,
    )


Invoke = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``service --schedule S --contacts C --state-dir tmp_path/state ARGS`` in-process."""
    for name in ("SCHEDULE", "CONTACTS", "STATE_DIR", "DATABASE_URL", "CHANNELS_FILE"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    monkeypatch.setenv("SERVICE_TEMPLATES", str(TEMPLATES))
    runner = CliRunner()
    state = tmp_path / "state"

    def invoke(*args: str) -> Result:
        base = ["--schedule", str(SCHEDULE), "--contacts", str(CONTACTS), "--state-dir", str(state)]
        return runner.invoke(app, [*base, *args])

    return invoke


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def seeded(cli: Invoke, state_dir: Path) -> Path:
    """A migrated ledger holding one submission, so "unchanged" is not trivially empty."""
    result = cli(
        "submit", "--unit", "changchun", "--obligation", "monthly-leads",
        "--period", "2023-07", "--at", "2023-07-20T10:00+08:00",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return state_dir


# --- 1. schedule ----------------------------------------------------------------------------

SCHEDULE_LINES = SCHEDULE_TEXT.splitlines(keepends=True)
_SCALAR = re.compile(r"(?:^|[\s{,])[A-Za-z_]+: ([^\s,{}\[\]#][^,{}\[\]#\n]*?)(?=\s*(?:,|}|#|$))")

TRICKY_YAML = st.sampled_from(
    [
        "0", "5", "7", "-1", "-365", "1.5", "-0", "0x1F", "0o17", "1_000", "1e309", ".inf",
        ".nan", "99999999999999999999", "9999-12-31", "0001-01-01", "99999-01-01",
        "2023-02-30", "2023-13-01", "2023-06", "'2023-00'", "'2023-6'", "2023-06-30T25:00",
        "'25:00'", "25:00", "24:00", "'23:59:60'", "'-01:00'", "17:00:00.5", "", "''",
        '""', "null", "~", "Null", "true", "no", "[]", "[1, 2]", "[[]]", "{}", "{a: 1}",
        "[friday]", "吉林", "'😀'", '"\\0"', '"\\uD800"', '"\\t"', "monday", "Friday",
        "fri", "last", "'last'", "32", "*every_unit", "*escalation", "*nope", "&a x",
        "!!binary aGk=", "!!python/object/apply:os.system [ls]", "!!int 1.5",
        "!!timestamp 2023-02-30", "|", ">", "---", "...", "'", '"', "%", "@", "`", "? x",
        "- x", "a: b: c", "x" * 300, "Asia/Beijing", "/etc/passwd", "../x", "UTC",
    ]
)  # fmt: skip


def _scalar_spans(lines: list[str]) -> list[tuple[int, int, int]]:
    """(line index, start, end) of every plain scalar value outside comments."""
    spans = []
    for index, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        spans += [(index, m.start(1), m.end(1)) for m in _SCALAR.finditer(line)]
    return spans


Edit = tuple[str, int, str]
LINE_EDITS = st.lists(
    st.tuples(st.sampled_from(["delete", "duplicate"]), st.integers(0, 10**6), st.just("")),
    min_size=1,
    max_size=3,
)
VALUE_EDITS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["delete", "duplicate"]), st.integers(0, 10**6), st.just("")),
        st.tuples(st.just("replace"), st.integers(0, 10**6), TRICKY_YAML),
        st.tuples(st.just("replace"), st.integers(0, 10**6), TRICKY_YAML),
    ),
    min_size=1,
    max_size=3,
)


def mutate_schedule(edits: list[Edit]) -> str:
    lines = list(SCHEDULE_LINES)
    for op, index, value in edits:
        if op == "replace":
            spans = _scalar_spans(lines)
            i, start, end = spans[index % len(spans)]
            lines[i] = lines[i][:start] + value + lines[i][end:]
        elif lines:
            i = index % len(lines)
            if op == "delete":
                del lines[i]
            else:
                lines.insert(i, lines[i])
    return "".join(lines)


def _line_no(text: str) -> int:
    """1-based line of the shipped schedule that is exactly ``text``."""
    [index] = [i for i, line in enumerate(SCHEDULE_LINES) if line.rstrip("\n") == text]
    return index + 1


SENDING_START_LINE = _line_no('    start: "08:00"')
SENDING_START_SPAN = next(
    n for n, (i, _, _) in enumerate(_scalar_spans(SCHEDULE_LINES)) if i == SENDING_START_LINE - 1
)


def assert_parses_or_is_located(path: Path, text: str) -> None:
    try:
        parse_schedule(path)
    except ConfigError as exc:
        # A syntax error at the end of the stream is marked on the line after the last one.
        assert_located(exc.problems, {str(path): text.count("\n") + 1})


def test_scalar_spans_find_the_schedule_values() -> None:
    """The mutation helper sees the shipped schedule's values, e.g. the time zone."""
    values = {SCHEDULE_LINES[i][s:e] for i, s, e in _scalar_spans(SCHEDULE_LINES)}
    assert {"Asia/Shanghai", "2023-05-18", "friday", "weekly", "last", "2", '"08:00"'} <= values


@FUZZ
@given(edits=LINE_EDITS)
def test_schedule_with_lines_deleted_or_duplicated_is_located(
    write_schedule: Callable[[str], Path], edits: list[Edit]
) -> None:
    """The shipped schedule with lines deleted or duplicated parses or fails located."""
    text = mutate_schedule(edits)
    assert_parses_or_is_located(write_schedule(text), text)


@FUZZ
@given(edits=VALUE_EDITS)
@example(edits=[("replace", SENDING_START_SPAN, "0")])
def test_schedule_with_tricky_values_is_located(
    write_schedule: Callable[[str], Path], edits: list[Edit]
) -> None:
    """The shipped schedule with lines edited and values replaced parses or fails located."""
    text = mutate_schedule(edits)
    assert_parses_or_is_located(write_schedule(text), text)


@pytest.mark.parametrize("value", ['"08:00+08:00"', "0"], ids=["offset", "seconds"])
def test_sending_window_aware_time_is_located(
    write_schedule: Callable[[str], Path], value: str
) -> None:
    """sending_window.start with an offset or as seconds is a problem on the window's lines."""
    path = write_schedule(SCHEDULE_TEXT.replace('start: "08:00"', f"start: {value}", 1))
    with pytest.raises(ConfigError) as info:
        parse_schedule(path)
    [problem] = info.value.problems
    assert problem.field.startswith("campaign.sending_window")
    assert problem.line in (SENDING_START_LINE - 2, SENDING_START_LINE)


@pytest.mark.parametrize("value", ['"17:00+00:00"', "61200"], ids=["offset", "seconds"])
def test_due_time_with_offset_or_seconds_is_refused(
    write_schedule: Callable[[str], Path], value: str
) -> None:
    """campaign.due_time must be a wall-clock time; an offset or a number is refused there."""
    path = write_schedule(SCHEDULE_TEXT.replace('due_time: "17:00"', f"due_time: {value}", 1))
    with pytest.raises(ConfigError) as info:
        parse_schedule(path)
    assert [(p.line, p.field) for p in info.value.problems] == [
        (_line_no('  due_time: "17:00"'), "campaign.due_time")
    ]


def test_billion_laughs_schedule_is_refused(write_schedule: Callable[[str], Path]) -> None:
    """An alias bomb (10^9 values) is refused as a ConfigError instead of being expanded."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 10)]
    path = write_schedule("\n".join(levels) + "\ncampaign: *a9\n")
    with pytest.raises(ConfigError) as info:
        parse_schedule(path)
    assert_located(info.value.problems, {str(path): 11})
    assert "alias expansion" in info.value.problems[0].message


def test_oversized_schedule_is_refused(tmp_path: Path) -> None:
    """A 6 MB schedule file is refused as larger than the limit, before parsing."""
    path = tmp_path / "huge.yaml"
    path.write_text(SCHEDULE_TEXT + "# padding\n" * (6 * 2**20 // 10), encoding="utf-8")
    assert path.stat().st_size > 6 * 2**20
    with pytest.raises(ConfigError) as info:
        parse_schedule(path)
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert "larger than" in problem.message


# --- 2. directory ---------------------------------------------------------------------------

CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "", " ", "jilin", "changchun", "yanji", "region", "county", "province",
            "supervisor", "liaison", "head", "+8613800000001", "13800000001", "12345",
            "+1 202 555 0100", "a@example.org", "a@", "@", "x" * 70, "\n", "\r", '"', ",",
            ";", "\ufeff", "\x00", "None", "null", "吉林",
        ]
    ),
)  # fmt: skip

Mutation = tuple[str, int, int, str]
ROW_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["replace", "replace", "drop", "extra", "shuffle", "swap-header"]),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        CELL,
    ),
    min_size=1,
    max_size=3,
)


def mutate_rows(text: str, edits: list[Mutation]) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    for op, r, c, value in edits:
        row = rows[r % len(rows)]
        if op == "replace" and row:
            row[c % len(row)] = value
        elif op == "drop" and row:
            del row[c % len(row)]
        elif op == "extra":
            row.append(value)
        elif op == "shuffle" and row:
            k = c % len(row)
            row[:] = row[k:] + row[:k]
        elif op == "swap-header":  # columns shuffled in the header only
            k = c % len(rows[0])
            rows[0][:] = rows[0][k:] + rows[0][:k]
    return rows


def write_csv(path: Path, rows: list[list[str]], crlf: bool, bom: bool) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if crlf else "\n").writerows(rows)
    text = ("\ufeff" if bom else "") + out.getvalue()
    path.write_bytes(text.encode("utf-8"))
    return text


@FUZZ
@given(
    target=st.sampled_from(["units", "people", "both"]),
    edits=ROW_EDITS,
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_mutated_directory_fails_only_with_located_problems(
    target: str, edits: list[Mutation], crlf: bool, bom: bool
) -> None:
    """Shipped units/people CSV with cells replaced/dropped/added/shuffled load or are located."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines: dict[str, int] = {}
        for stem, original in (("units", UNITS_CSV), ("people", PEOPLE_CSV)):
            rows = mutate_rows(original, edits if target in (stem, "both") else [])
            path = folder / f"{stem}.csv"
            lines[str(path)] = physical_lines(write_csv(path, rows, crlf, bom))
        try:
            load_directory(folder)
        except ConfigError as exc:
            assert_located(exc.problems, lines)


def test_directory_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    """The shipped directory saved by Excel (BOM, CRLF) loads like the original."""
    for stem, original in (("units", UNITS_CSV), ("people", PEOPLE_CSV)):
        rows = list(csv.reader(io.StringIO(original)))
        write_csv(tmp_path / f"{stem}.csv", rows, crlf=True, bom=True)
    assert load_directory(tmp_path) == load_directory(CONTACTS)


# --- 3. submissions CSV ---------------------------------------------------------------------

SUB_CELL: dict[str, st.SearchStrategy[str]] = {
    "unit": st.one_of(st.sampled_from(["", "atlantis", "YANJI", *UNIT_IDS]), st.text(max_size=8)),
    "obligation": st.one_of(st.sampled_from(["", "weekly", *OBLIGATIONS]), st.text(max_size=8)),
    "period": st.one_of(st.sampled_from(["", "2023-W99", "W25", *PERIODS]), st.text(max_size=8)),
    "count": st.one_of(
        st.sampled_from(["", "0", "-1", "1", "2", "1.5", "two", "1e3", " 3 ", "１", "1_0"]),
        st.integers(-10, 10**6).map(str),
        st.text(max_size=6),
    ),
    "at": st.one_of(
        st.sampled_from(
            [
                "", "2023-06-20T10:00", "2023-06-20T10:00+08:00", "2023-02-30T10:00",
                "2023-06-20T25:00", "2023-06-20 10:00", "20230620", "yesterday",
                "2023-06-20T10:00+25:00", "2023-06-20T10:00Z", "2023-W25",
            ]
        ),
        st.text(max_size=12),
    ),
}  # fmt: skip
SUB_ROWS = st.lists(
    st.fixed_dictionaries({c: SUB_CELL[c] for c in SUBMISSION_COLUMNS}), min_size=1, max_size=6
)


def write_submissions(path: Path, rows: list[list[str]]) -> str:
    return write_csv(path, [SUBMISSION_COLUMNS, *rows], crlf=False, bom=False)


@LARGE_REPR_OK
@FUZZ
@given(rows=SUB_ROWS)
def test_random_submission_rows_load_or_name_line_and_field(
    model: CampaignModel, rows: list[dict[str, str]]
) -> None:
    """Random submission rows give a list or problems naming the line and the column."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subs.csv"
        text = write_submissions(path, [[row[c] for c in SUBMISSION_COLUMNS] for row in rows])
        try:
            subs = load_submissions_csv(path, model)
        except ConfigError as exc:
            assert_located(exc.problems, {str(path): physical_lines(text)})
            for problem in exc.problems:
                assert problem.line is not None, problem
                assert problem.field in SUBMISSION_COLUMNS, problem
        else:
            assert all(isinstance(s, NewSubmission) for s in subs)


GOOD_SUBMISSIONS = (
    "unit,obligation,period,count,at\n"
    "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
    "changchun,monthly-leads,2023-07,2,\n"
)


@LARGE_REPR_OK
@FUZZ
@given(edits=ROW_EDITS)
def test_misshapen_submission_rows_name_their_line(
    model: CampaignModel, edits: list[Mutation]
) -> None:
    """Submission rows with dropped, extra or shuffled cells are refused on their line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subs.csv"
        text = write_csv(path, mutate_rows(GOOD_SUBMISSIONS, edits), crlf=False, bom=False)
        try:
            load_submissions_csv(path, model)
        except ConfigError as exc:
            assert_located(exc.problems, {str(path): physical_lines(text)})
            assert all(p.line is not None for p in exc.problems)


BAD_ROWS = {
    "unknown-unit": (["atlantis", "weekly-progress", "2023-W25", "1", ""], "unit"),
    "unknown-obligation": (["yanji", "weekly", "2023-W25", "1", ""], "obligation"),
    "event": (["yanji", "launch-ceremony", "2023-05-31", "1", ""], "obligation"),
    "unknown-period": (["yanji", "weekly-progress", "2023-W99", "1", ""], "period"),
    "not-owing": (["yanji", "monthly-exposure", "2023-07", "1", ""], "unit"),
    "zero-count": (["yanji", "weekly-progress", "2023-W25", "0", ""], "count"),
    "negative-count": (["yanji", "weekly-progress", "2023-W25", "-2", ""], "count"),
    "word-count": (["yanji", "weekly-progress", "2023-W25", "two", ""], "count"),
    "impossible-date": (["yanji", "weekly-progress", "2023-W25", "1", "2023-02-30T10:00"], "at"),
    "not-a-time": (["yanji", "weekly-progress", "2023-W25", "1", "yesterday"], "at"),
    "missing-unit": (["", "weekly-progress", "2023-W25", "1", ""], "unit"),
    "extra-cell": (["yanji", "weekly-progress", "2023-W25", "1", "", "surplus"], ""),
}


@LARGE_REPR_OK
@CLI_FUZZ
@given(data=st.data(), bad=st.sampled_from(sorted(BAD_ROWS)))
def test_import_with_one_bad_row_imports_nothing(
    cli: Invoke, state_dir: Path, tmp_path: Path, model: CampaignModel, data: st.DataObject,
    bad: str,
) -> None:  # fmt: skip
    """import of good rows plus one bad row exits 1 naming that line; no row is written."""
    if not (state_dir / "service.db").exists():
        assert cli("migrate").exit_code == 0
    triples = [
        (unit, occ.obligation, occ.period)
        for occ in model.submittable()
        for unit in model.owers[occ.obligation]
    ]
    good = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(triples),
                st.sampled_from(["", "1", "2"]),
                st.sampled_from(["", "2023-06-20T10:00", "2023-07-01T08:00+08:00"]),
            ),
            min_size=1,
            max_size=20,
        ),
        label="good rows",
    )
    rows = [[*triple, count, at] for triple, count, at in good]
    position = data.draw(st.integers(0, len(rows)), label="bad row position")
    bad_row, field = BAD_ROWS[bad]
    rows.insert(position, bad_row)
    path = tmp_path / f"subs-{bad}-{len(rows)}-{position}.csv"
    write_submissions(path, rows)
    result = cli("import", str(path))
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert f"{path}:{position + 2}: {field + ': ' if field else ''}" in result.stderr
    assert submission_count(state_dir) == 0


def test_import_huge_count_is_a_located_problem(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """import of a row with count 10**20 exits 1 naming line 3, column count; nothing written."""
    assert cli("migrate").exit_code == 0
    path = tmp_path / "subs.csv"
    write_submissions(
        path,
        [
            ["yanji", "weekly-progress", "2023-W25", "1", ""],
            ["hunchun", "weekly-progress", "2023-W25", str(10**20), ""],
        ],
    )
    result = cli("import", str(path))
    assert submission_count(state_dir) == 0
    assert_no_traceback(result)
    assert f"{path}:3: count: " in result.stderr


def test_import_unstorable_time_is_a_located_problem(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """import of a row at 0001-01-01T00:00 exits 1 naming line 3, column at; nothing written."""
    assert cli("migrate").exit_code == 0
    path = tmp_path / "subs.csv"
    write_submissions(
        path,
        [
            ["yanji", "weekly-progress", "2023-W25", "1", ""],
            ["hunchun", "weekly-progress", "2023-W25", "1", "0001-01-01T00:00"],
        ],
    )
    result = cli("import", str(path))
    assert submission_count(state_dir) == 0
    assert_no_traceback(result)
    assert f"{path}:3: at: " in result.stderr


# --- 4. CLI arguments -----------------------------------------------------------------------

WORD = st.text(max_size=10)
UNIT_ARG = st.one_of(st.sampled_from(["", "atlantis", "--help", "-x", *UNIT_IDS]), WORD)
OBLIGATION_ARG = st.one_of(st.sampled_from(["", "weekly", *OBLIGATIONS]), WORD)
PERIOD_ARG = st.one_of(st.sampled_from(["", "2023-W99", *PERIODS]), WORD)
COUNT_ARG = st.one_of(
    st.integers(-3, 2**31 - 1).map(str),
    st.sampled_from(["", "x", "1.5", "1e3", "0x10", "-0", "１", " 2 "]),
)
STORABLE_MOMENT = st.datetimes(
    min_value=datetime(2, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(9998, 12, 31),  # noqa: DTZ001
    timezones=st.one_of(st.none(), st.timezones()),
).map(lambda moment: moment.isoformat())
AT_ARG = st.one_of(
    st.none(),
    STORABLE_MOMENT,
    st.sampled_from(
        [
            "", "now", "2023-02-30", "2023-06-20T25:00", "2023-06-20T10:00+25:00",
            "2023-06-20T10:00Z", "2023-06-20", "2023-W25", "20230620T1000", "--json",
        ]
    ),
    WORD,
)  # fmt: skip


def _option(name: str, value: str | None) -> list[str]:
    return [] if value is None else [f"--{name}", value]


@CLI_FUZZ
@given(
    unit=UNIT_ARG,
    obligation=OBLIGATION_ARG,
    period=PERIOD_ARG,
    count=st.one_of(st.none(), COUNT_ARG),
    at=AT_ARG,
)
@example(unit="yanji", obligation="weekly-progress", period="2023-W25", count="2", at=None)
def test_submit_arguments_exit_cleanly_and_failures_write_nothing(
    cli: Invoke, seeded: Path, unit: str, obligation: str, period: str, count: str | None,
    at: str | None,
) -> None:  # fmt: skip
    """submit with any argument values exits 0/1/2 without a traceback; failures write nothing."""
    before, count_before = ledger_rows(seeded), submission_count(seeded)
    result = cli(
        "submit", *_option("unit", unit), *_option("obligation", obligation),
        *_option("period", period), *_option("count", count), *_option("at", at),
    )  # fmt: skip
    assert_no_traceback(result)
    if result.exit_code == 0:
        assert submission_count(seeded) == count_before + 1
    else:
        assert ledger_rows(seeded) == before


@CLI_FUZZ
@given(at=AT_ARG, unit=st.one_of(st.none(), UNIT_ARG), json=st.booleans())
def test_status_arguments_exit_cleanly_and_change_nothing(
    cli: Invoke, seeded: Path, at: str | None, unit: str | None, json: bool
) -> None:
    """status with any --at/--unit exits 0/1/2 without a traceback and writes nothing."""
    before = ledger_rows(seeded)
    result = cli(
        "status", *(["--json"] if json else []), *_option("at", at), *_option("unit", unit)
    )
    assert_no_traceback(result)
    assert ledger_rows(seeded) == before


@CLI_FUZZ
@given(at=AT_ARG, scope=st.one_of(st.none(), UNIT_ARG))
def test_overdue_arguments_exit_cleanly_and_change_nothing(
    cli: Invoke, seeded: Path, at: str | None, scope: str | None
) -> None:
    """overdue with any --at/--scope exits 0/1/2 without a traceback and writes nothing."""
    before = ledger_rows(seeded)
    result = cli("overdue", "--json", *_option("at", at), *_option("scope", scope))
    assert_no_traceback(result)
    assert ledger_rows(seeded) == before


SUBMIT_W25 = [
    "submit",
    "--unit",
    "yanji",
    "--obligation",
    "weekly-progress",
    "--period",
    "2023-W25",
]


def test_submit_huge_count_is_refused(cli: Invoke, seeded: Path) -> None:
    """submit --count 10**20 exits 1 or 2 without a traceback and writes nothing."""
    before = ledger_rows(seeded)
    result = cli(*SUBMIT_W25, "--count", str(10**20))
    assert ledger_rows(seeded) == before
    assert_no_traceback(result)
    assert result.exit_code in (1, 2)


UNSTORABLE_AT = pytest.mark.parametrize(
    "at",
    [
        pytest.param("0001-01-01T00:00", id="year-1-local"),
        pytest.param("0001-01-01T00:00+14:00", id="year-1-east"),
        pytest.param("9999-12-31T23:59:59-12:00", id="year-9999-west"),
    ],
)
_UNSTORABLE_REASON = (
    "parse_time accepts moments whose UTC value is outside datetime's range; "
    "UtcDateTime.astimezone(UTC) then raises OverflowError inside SQLAlchemy "
    "(StatementError traceback) instead of '--at: ...' with exit 1"
)


@UNSTORABLE_AT
def test_submit_unstorable_at_is_refused(cli: Invoke, seeded: Path, at: str) -> None:
    """submit --at with a moment outside the storable range exits 1 naming --at; no write."""
    before = ledger_rows(seeded)
    result = cli(*SUBMIT_W25, "--at", at)
    assert ledger_rows(seeded) == before
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert "--at" in result.stderr


@UNSTORABLE_AT
def test_status_unstorable_at_is_refused(cli: Invoke, seeded: Path, at: str) -> None:
    """status --at with a moment outside the storable range exits 1 naming --at."""
    result = cli("status", "--json", "--at", at)
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert "--at" in result.stderr


@UNSTORABLE_AT
def test_overdue_unstorable_at_is_refused(cli: Invoke, seeded: Path, at: str) -> None:
    """overdue --at with a moment outside the storable range exits 1 naming --at."""
    result = cli("overdue", "--json", "--at", at)
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert "--at" in result.stderr


# --- 5. template sandbox --------------------------------------------------------------------

ATTACKS = [
    pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="subclasses"),
    pytest.param("{{ cycler.__init__.__globals__ }}", id="cycler-globals"),
    pytest.param("{{ recipient.__class__ }}", id="context-class"),
    pytest.param("{{ items|attr('__class__') }}", id="attr-filter"),
    pytest.param(
        "{% for x in range(10**9) %}{% endfor %}",
        id="huge-range",
    ),
    pytest.param("{{ [].append(1) }}", id="mutate-list"),
    pytest.param("{{ recipient.update({'name': 'x'}) }}", id="mutate-context"),
    pytest.param("{{ nonexistent.x }}", id="undefined"),
    pytest.param("{% include '/etc/passwd' %}", id="include-outside"),
]


@contextmanager
def templates_with(target: str | None = None, old: str = "", new: str = "") -> Iterator[Path]:
    """A copy of the shipped templates with ``old`` replaced by ``new`` in ``target``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "templates"
        shutil.copytree(TEMPLATES, folder)
        if target is not None:
            path = folder / target
            text = path.read_text(encoding="utf-8")
            assert text.count(old) == 1, old
            path.write_text(text.replace(old, new), encoding="utf-8")
        yield folder


def test_copied_templates_pass(model: CampaignModel) -> None:
    """The untouched copy used below is accepted (the attacks are what is refused)."""
    with templates_with() as folder:
        check_templates(model, folder)


@pytest.mark.parametrize("attack", ATTACKS)
def test_escape_attempt_in_text_template_is_refused(model: CampaignModel, attack: str) -> None:
    """An escape attempt in email/reminder.txt makes check_templates raise ConfigError."""
    with templates_with("email/reminder.txt", "如已报送", f"{attack}\n如已报送") as folder:
        with pytest.raises(ConfigError) as info:
            check_templates(model, folder)
    assert any("reminder" in p.file for p in info.value.problems)


def test_escape_attempt_in_html_block_is_refused(model: CampaignModel) -> None:
    """An escape attempt inside the HTML content block is refused."""
    attack = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with templates_with("email/reminder.html", "<p>如已报送", f"{attack}<p>如已报送") as folder:
        with pytest.raises(ConfigError, match="SecurityError"):
            check_templates(model, folder)


def test_escape_attempt_in_sms_param_is_refused(model: CampaignModel) -> None:
    """An escape attempt in an SMS variable expression is refused naming sms.yaml."""
    old = 'count: "{{ digest.unit_count }}"'
    with templates_with("sms.yaml", old, 'count: "{{ digest.__class__ }}"') as folder:
        with pytest.raises(ConfigError) as info:
            check_templates(model, folder)
    assert any(p.file == str(folder / "sms.yaml") for p in info.value.problems)


def test_validate_refuses_escape_naming_the_template(cli: Invoke) -> None:
    """service --templates DIR validate exits 1 and names the attacked template."""
    attack = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with templates_with("email/reminder.txt", "如已报送", f"{attack}\n如已报送") as folder:
        result = cli("--templates", str(folder), "validate")
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert str(folder / "email" / "reminder.") in result.stderr
    assert "SecurityError" in result.stderr
    assert "OK" not in result.stdout


def test_validate_names_the_exact_template_file_and_line(cli: Invoke) -> None:
    """The refusal names email/reminder.txt and the attack's line, not a glob."""
    attack = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with templates_with("email/reminder.txt", "如已报送", f"{attack}\n如已报送") as folder:
        line = (folder / "email" / "reminder.txt").read_text(encoding="utf-8").splitlines()
        lineno = 1 + next(i for i, s in enumerate(line) if attack in s)
        result = cli("--templates", str(folder), "validate")
    assert f"{folder / 'email' / 'reminder.txt'}:{lineno}:" in result.stderr


def test_validate_refuses_huge_range_without_traceback(cli: Invoke) -> None:
    """service validate on a template looping over range(10**9) exits 1, no traceback."""
    attack = "{% for x in range(10**9) %}{% endfor %}"
    with templates_with("email/reminder.txt", "如已报送", f"{attack}\n如已报送") as folder:
        result = cli("--templates", str(folder), "validate")
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert "reminder" in result.stderr


def test_tagged_flow_sequence_in_a_list_is_located(
    write_schedule: Any, schedule_path: Path
) -> None:
    """A YAML-tagged flow list where escalation steps belong is refused with file and line."""
    text = schedule_path.read_text(encoding="utf-8")
    old = "    escalation: *escalation\n"
    assert old in text
    path = write_schedule(
        text.replace(old, "    escalation: !!python/object/apply:os.system [ls]\n", 1)
    )
    with pytest.raises(ConfigError) as caught:
        parse_schedule(path)
    problem = caught.value.problems[0]
    assert problem.file == str(path) and problem.line is not None


# --- 6. formula characters, control characters and NUL in every text field -------------------
# Issue 8 "done when": each text field of the directory, the schedule and the submissions
# gets a leading formula character and/or a control character. Either a located problem
# (and, loaders being pure, nothing changed), or the text is accepted and then every
# spreadsheet the service writes from it (the digest CSV and XLSX) is neutralised.

FORMULA_LEADS = ["", "=", "+", "-", "@", "\t", "\r", "＝", '=HYPERLINK("http://x")&']
CONTROLS = [
    "", "\x00", "\x01", "\x07", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\r", "\n", "\t", "\u2028", "\u2029", "\u202e", "\u2066",
]  # fmt: skip
HOSTILE_TEXT = st.builds(
    lambda lead, body, control, at: lead + body[:at] + control + body[at:],
    st.sampled_from(FORMULA_LEADS),
    st.sampled_from(["吉林", "changchun", "SUM(A1:A9)", "cmd|' /C calc'!A0", "1+1", ""]),
    st.sampled_from(CONTROLS),
    st.integers(0, 12),
)
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
SCHEDULE_TEXT_FIELDS = re.compile(
    r"(?m)^\s*(?:- )?(name|title|short_title|how_to_submit|form|office|people|phone|email"
    r"|address): (.+)$"
)
SCHEDULE_TEXT_SPANS = [m.span(2) for m in SCHEDULE_TEXT_FIELDS.finditer(SCHEDULE_TEXT)]


def assert_spreadsheets_neutralised(model: CampaignModel) -> None:
    """Digest CSV and XLSX of every unit: no live formula, no control character."""
    import openpyxl

    from service.digests import digest_csv, digest_rows, digest_xlsx
    from service.sheets import FORMULA_TRIGGERS

    subs = model.submittable()
    entries = [(u, o.key) for o in subs[:2] for u in model.owers[o.obligation]]
    rows = digest_rows(model, entries, {}, subs[0].due_at)
    assert rows
    for row in csv.reader(io.StringIO(digest_csv(rows).decode("utf-8-sig"))):
        for cell in row:
            assert not cell or cell[0] not in FORMULA_TRIGGERS, cell
    book = openpyxl.load_workbook(io.BytesIO(digest_xlsx(rows)))
    for sheet in book.worksheets:
        for line in sheet.iter_rows():
            for cell in line:
                assert cell.data_type != "f", cell.value
                if isinstance(cell.value, str):
                    assert cell.value[:1] not in FORMULA_TRIGGERS, cell.value
                    assert not FORBIDDEN.search(cell.value), cell.value


def _directory_with(stem: str, row: int, column: str, value: str, folder: Path) -> dict[str, int]:
    lines: dict[str, int] = {}
    for name, original in (("units", UNITS_CSV), ("people", PEOPLE_CSV)):
        rows = list(csv.reader(io.StringIO(original)))
        if name == stem:
            target = rows[1 + row % (len(rows) - 1)]
            target[rows[0].index(column)] = value
        path = folder / f"{name}.csv"
        lines[str(path)] = physical_lines(write_csv(path, rows, crlf=False, bom=False))
    return lines


@LARGE_REPR_OK
@FUZZ
@given(
    field=st.sampled_from(
        [("units", c) for c in ("id", "name", "kind", "parent", "tags")]
        + [("people", c) for c in ("id", "name", "unit", "role", "scope", "email", "mobile")]
    ),
    row=st.integers(0, 10**6),
    value=HOSTILE_TEXT,
)
def test_hostile_text_in_the_directory_is_located_or_neutralised(
    model: CampaignModel, field: tuple[str, str], row: int, value: str
) -> None:
    """A formula lead or control character in any directory cell: located, or harmless."""
    from service.model import build_model

    stem, column = field
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = _directory_with(stem, row, column, value, folder)
        try:
            directory = load_directory(folder)
        except ConfigError as exc:
            assert_located(exc.problems, lines)
            assert any(p.field for p in exc.problems), exc.problems
            return
    for unit in directory.units.values():
        assert not FORBIDDEN.search(unit.name) and "\n" not in unit.name, unit
    for person in directory.people:
        assert not FORBIDDEN.search(person.name) and "\n" not in person.name, person
    try:
        accepted = build_model(model.schedule, directory)
    except ConfigError as exc:  # e.g. a renamed unit an obligation selects by id
        assert exc.problems
        return
    assert_spreadsheets_neutralised(accepted)


@LARGE_REPR_OK
@FUZZ
@given(span=st.sampled_from(SCHEDULE_TEXT_SPANS), value=HOSTILE_TEXT)
def test_hostile_text_in_the_schedule_is_located_or_neutralised(
    write_schedule: Callable[[str], Path], model: CampaignModel, span: tuple[int, int],
    value: str,
) -> None:  # fmt: skip
    """A formula lead or control character in any schedule text: located, or harmless."""
    from service.model import build_model

    start, end = span
    quoted = json.dumps(value, ensure_ascii=True)  # a YAML double-quoted scalar
    text = SCHEDULE_TEXT[:start] + quoted + SCHEDULE_TEXT[end:]
    path = write_schedule(text)
    try:
        schedule = parse_schedule(path)
    except ConfigError as exc:
        assert_located(exc.problems, {str(path): physical_lines(text)})
        assert all(p.line is not None for p in exc.problems), exc.problems
        return
    for ob in schedule.obligations:
        assert not FORBIDDEN.search(ob.title) and "\n" not in ob.title, ob.title
    assert_spreadsheets_neutralised(build_model(schedule, model.directory))


@LARGE_REPR_OK
@FUZZ
@given(column=st.sampled_from(SUBMISSION_COLUMNS), value=HOSTILE_TEXT)
def test_hostile_text_in_submissions_is_located(
    model: CampaignModel, column: str, value: str
) -> None:
    """A formula lead or control character in any submissions cell is a located problem."""
    good = ["yanji", "weekly-progress", "2023-W25", "1", "2023-06-20T10:00"]
    bad = list(good)
    bad[SUBMISSION_COLUMNS.index(column)] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subs.csv"
        text = write_submissions(path, [good, bad])
        try:
            subs = load_submissions_csv(path, model)
        except ConfigError as exc:
            assert_located(exc.problems, {str(path): physical_lines(text)})
            assert all(p.line is not None and p.field for p in exc.problems), exc.problems
        else:  # only a harmless edit survives (e.g. an empty count or time)
            assert all(FORBIDDEN.search(s.unit) is None for s in subs)
