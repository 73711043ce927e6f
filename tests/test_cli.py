"""The ``service`` command line, run in-process with the SQLite state under tmp_path."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from service.cli import app
from service.model import CampaignModel

ROOT = Path(__file__).resolve().parent.parent
YANBIAN = {"yanbian", "yanji", "hunchun", "dunhua"}

Invoke = Callable[..., Result]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    schedule_path: Path,
    contacts_dir: Path,
    state_dir: Path,
) -> Invoke:
    """Run ``service --schedule S --contacts C --state-dir tmp ARGS``; clean env."""
    names = ("SCHEDULE", "CONTACTS", "STATE_DIR", "DATABASE_URL", "CHANNELS_FILE")
    for name in (*names, "DISPATCH_CONCURRENCY", "DISPATCH_UNRECORDED"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    monkeypatch.setenv("SERVICE_TEMPLATES", str(ROOT / "templates"))
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    runner = CliRunner()

    def invoke(*args: str, schedule: Path = schedule_path) -> Result:
        base = ["--schedule", str(schedule), "--contacts", str(contacts_dir)]
        return runner.invoke(app, [*base, "--state-dir", str(state_dir), *args])

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def submission_count(state_dir: Path) -> int:
    with closing(sqlite3.connect(state_dir / "service.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM submissions").fetchone()[0])


def test_validate_ok(cli: Invoke) -> None:
    """validate on the shipped files exits 0 and summarises the campaign."""
    result = ok(cli("validate"))
    assert result.stdout.startswith(
        "OK：jilin-2023：8 个事项，25 个周期（22 个需报送），27 个单位，65 人"
    )


def test_validate_broken_schedule(
    cli: Invoke, schedule_path: Path, write_schedule: Callable[[str], Path]
) -> None:
    """validate on a broken schedule exits 1 and prints file:line: field: message."""
    text = schedule_path.read_text(encoding="utf-8")
    lines = text.splitlines()
    [line] = [i for i, s in enumerate(lines, 1) if s == "  timezone: Asia/Shanghai"]
    broken = write_schedule(text.replace("  timezone: Asia/Shanghai", "  timezone: Asia/Beijing"))
    result = cli("validate", schedule=broken)
    assert result.exit_code == 1
    assert f"{broken}:{line}: campaign.timezone: " in result.stderr
    assert "unknown time zone 'Asia/Beijing'" in result.stderr
    assert "1 个问题：" in result.stderr
    assert "OK" not in result.stdout


def test_calendar_json_keys(cli: Invoke) -> None:
    """calendar --json has the documented top-level and per-occurrence keys."""
    payload = as_json(cli("calendar", "--json"))
    assert set(payload) == {"campaign", "timezone", "occurrences"}
    assert (payload["campaign"], payload["timezone"]) == ("jilin-2023", "Asia/Shanghai")
    for item in payload["occurrences"]:
        assert set(item) == {
            "key", "obligation", "title", "period", "kind", "due",
            "nominal_date", "shifted", "units_owing", "quota",
        }  # fmt: skip
        assert set(item["quota"]) == {"min", "target"}


def test_calendar_json_lists_the_model(cli: Invoke, model: CampaignModel) -> None:
    """calendar --json lists every occurrence of the model in order with its due."""
    payload = as_json(cli("calendar", "--json"))
    got = [(o["key"], o["due"], o["shifted"]) for o in payload["occurrences"]]
    assert got == [(o.key, o.due_at.isoformat(), o.shifted) for o in model.occurrences]


def test_calendar_json_w25_entry(cli: Invoke) -> None:
    """The shifted W25 entry is reported in full."""
    payload = as_json(cli("calendar", "--json"))
    [w25] = [o for o in payload["occurrences"] if o["key"] == "weekly-progress@2023-W25"]
    assert w25 == {
        "key": "weekly-progress@2023-W25",
        "obligation": "weekly-progress",
        "title": "报送“安全生产月”活动进展情况统计表",
        "period": "2023-W25",
        "kind": "weekly",
        "due": "2023-06-21T17:00:00+08:00",
        "nominal_date": "2023-06-23",
        "shifted": True,
        "units_owing": 26,
        "quota": {"min": 1, "target": 1},
    }
    exposure = [o for o in payload["occurrences"] if o["obligation"] == "monthly-exposure"]
    assert {o["units_owing"] for o in exposure} == {11}
    assert max(o["due"] for o in payload["occurrences"]) == "2023-12-31T17:00:00+08:00"


def test_calendar_json_is_stable(cli: Invoke) -> None:
    """Two runs print byte-identical JSON."""
    assert ok(cli("calendar", "--json")).stdout == ok(cli("calendar", "--json")).stdout


def test_submit_then_status_done(cli: Invoke) -> None:
    """After submit, status --json shows that unit's occurrence done."""
    ok(cli("submit", "--unit", "yanji", "--obligation", "weekly-progress",
           "--period", "2023-W25", "--at", "2023-06-20T10:00+08:00"))  # fmt: skip
    payload = as_json(cli("status", "--json", "--unit", "yanji", "--at", "2023-06-22T09:00+08:00"))
    states = {(r["obligation"], r["period"]): (r["state"], r["count"]) for r in payload["rows"]}
    assert states[("weekly-progress", "2023-W25")] == ("done", 1)
    assert states[("weekly-progress", "2023-W24")] == ("overdue", 0)
    assert {r["unit"] for r in payload["rows"]} == {"yanji"}
    assert payload["at"] == "2023-06-22T09:00:00+08:00"


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--unit", "atlantis", "--unit: 未知单位 'atlantis'"),
        ("--obligation", "weekly-progres", "obligation: 未知事项 'weekly-progres'"),
        ("--period", "2023-W27", "period: 'weekly-progress' 没有周期 '2023-W27'"),
    ],
)
def test_submit_unknown_field_writes_nothing(
    cli: Invoke, state_dir: Path, option: str, value: str, field: str
) -> None:
    """submit with an unknown unit/obligation/period exits 1 naming it; no row."""
    ok(cli("migrate"))
    args = {
        "--unit": "yanji",
        "--obligation": "weekly-progress",
        "--period": "2023-W25",
    }
    args[option] = value
    result = cli(
        "submit",
        *[x for kv in args.items() for x in kv],
        "--at",
        "2023-06-20T10:00+08:00",
    )
    assert result.exit_code == 1
    assert field in result.stderr
    assert submission_count(state_dir) == 0


def test_submit_for_event_refused(cli: Invoke, state_dir: Path) -> None:
    """Nothing can be submitted for an event."""
    ok(cli("migrate"))
    result = cli(
        "submit",
        "--unit",
        "yanji",
        "--obligation",
        "launch-ceremony",
        "--period",
        "2023-05-31",
    )
    assert result.exit_code == 1
    assert "obligation: 'launch-ceremony' 是活动" in result.stderr
    assert submission_count(state_dir) == 0


def test_submit_by_unit_not_owing(cli: Invoke, state_dir: Path) -> None:
    """A county cannot submit monthly-exposure, which only regions owe."""
    ok(cli("migrate"))
    result = cli(
        "submit",
        "--unit",
        "yanji",
        "--obligation",
        "monthly-exposure",
        "--period",
        "2023-07",
    )
    assert result.exit_code == 1
    assert "unit: 'yanji' 不需要报送 'monthly-exposure'" in result.stderr
    assert submission_count(state_dir) == 0


def test_retract_reopens(cli: Invoke, state_dir: Path) -> None:
    """retract makes a done occurrence overdue again; the row stays, retracted."""
    key = ["--unit", "yanji", "--obligation", "weekly-progress", "--period", "2023-W25"]
    ok(cli("submit", *key, "--at", "2023-06-20T10:00+08:00"))
    assert "已撤销报送 1" in ok(cli("retract", *key, "--reason", "wrong")).stdout
    payload = as_json(cli("status", "--json", "--unit", "yanji", "--at", "2023-06-22T09:00+08:00"))
    [row] = [r for r in payload["rows"] if r["period"] == "2023-W25"]
    assert (row["state"], row["count"]) == ("overdue", 0)
    assert submission_count(state_dir) == 1


def test_retract_nothing_fails(cli: Invoke) -> None:
    """retract with no active submission exits 1."""
    result = cli(
        "retract",
        "--unit",
        "yanji",
        "--obligation",
        "weekly-progress",
        "--period",
        "2023-W25",
    )
    assert result.exit_code == 1
    assert "no active submission of weekly-progress@2023-W25 by yanji" in result.stderr


def test_overdue_scope_yanbian(cli: Invoke) -> None:
    """overdue --json --scope yanbian lists only yanbian and its counties."""
    ok(cli("submit", "--unit", "yanji", "--obligation", "weekly-progress",
           "--period", "2023-W25", "--at", "2023-06-20T10:00+08:00"))  # fmt: skip
    payload = as_json(
        cli("overdue", "--json", "--scope", "yanbian", "--at", "2023-06-26T09:00+08:00")
    )
    assert payload["scope"] == "yanbian"
    units = {u["unit"] for group in payload["obligations"] for u in group["units"]}
    assert units == YANBIAN
    [weekly] = [g for g in payload["obligations"] if g["obligation"] == "weekly-progress"]
    w25 = {u["unit"] for u in weekly["units"] if u["period"] == "2023-W25"}
    assert w25 == YANBIAN - {"yanji"}
    assert {u["days_late"] for u in weekly["units"] if u["period"] == "2023-W25"} == {4}


def test_overdue_unknown_scope(cli: Invoke) -> None:
    """An unknown scope is refused naming --scope."""
    result = cli("overdue", "--json", "--scope", "atlantis", "--at", "2023-06-26T09:00+08:00")
    assert result.exit_code == 1
    assert "--scope: 未知单位 'atlantis'" in result.stderr


def test_status_bad_time(cli: Invoke) -> None:
    """A malformed --at is refused naming the option."""
    result = cli("status", "--json", "--at", "next friday")
    assert result.exit_code == 1
    assert "--at：无法识别的时间 'next friday'" in result.stderr


def test_import_all_rows(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """import of a valid CSV records every row."""
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text(
        "unit,obligation,period,count,at\n"
        "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
        "changchun,monthly-leads,2023-07,2,2023-07-20T10:00+08:00\n",
        encoding="utf-8",
    )
    assert "新增 2，已记录 0，冲突 0" in ok(cli("import", str(csv_file))).stdout
    assert submission_count(state_dir) == 2
    payload = as_json(
        cli("status", "--json", "--unit", "changchun", "--at", "2023-08-01T09:00+08:00")
    )
    [row] = [
        r
        for r in payload["rows"]
        if r["obligation"] == "monthly-leads" and r["period"] == "2023-07"
    ]
    assert (row["state"], row["count"], row["target"]) == ("done", 2, 2)


def test_import_bad_row_imports_nothing(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """import of a CSV with a bad row exits 1 naming the line, and imports nothing."""
    ok(cli("migrate"))
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text(
        "unit,obligation,period,count,at\n"
        "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
        "hunchun,weekly-progress,2023-W99,1,2023-06-20T10:00\n",
        encoding="utf-8",
    )
    result = cli("import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:3: period: 'weekly-progress' 没有周期 '2023-W99'" in result.stderr
    assert submission_count(state_dir) == 0


def test_migrate_twice(cli: Invoke, state_dir: Path) -> None:
    """migrate can run repeatedly and leaves the SQLite file in the state folder."""
    assert "数据库结构已是最新" in ok(cli("migrate")).stdout
    assert "数据库结构已是最新" in ok(cli("migrate")).stdout
    assert (state_dir / "service.db").is_file()


def test_an_invalid_dispatch_setting_names_its_variable(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICE_DISPATCH_CONCURRENCY=0 is refused with the variable's name, exit 1."""
    monkeypatch.setenv("SERVICE_DISPATCH_CONCURRENCY", "0")
    result = cli("validate")
    assert result.exit_code == 1
    assert "SERVICE_DISPATCH_CONCURRENCY" in result.output


async def test_dispatch_settings_reach_the_dispatcher(
    schedule_path: Path, contacts_dir: Path, tmp_path: Path
) -> None:
    """--concurrency/--unrecorded (or their variables) become the dispatcher's policy."""
    from service.app import open_app
    from service.clock import VirtualClock
    from service.config import Settings

    settings = Settings(
        schedule=schedule_path,
        contacts=contacts_dir,
        templates=ROOT / "templates",
        state_dir=tmp_path / "state",
        dispatch_concurrency=3,
        dispatch_unrecorded=5,
    )
    async with open_app(settings, VirtualClock(datetime(2023, 6, 1, tzinfo=UTC))) as application:
        policy = application.reconciler.dispatcher.policy
    assert (policy.concurrency, policy.unrecorded) == (3, 5)
