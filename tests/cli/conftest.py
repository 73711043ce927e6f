"""The ``service`` command line run in-process, on a state folder under tmp_path."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from service.cli import app

ROOT = Path(__file__).resolve().parents[2]
Invoke = Callable[..., Result]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def contacts(tmp_path: Path, contacts_dir: Path) -> Path:
    """A writable copy of the shipped directory (tests rename units in it)."""
    target = tmp_path / "contacts"
    shutil.copytree(contacts_dir, target)
    return target


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, schedule_path: Path, contacts: Path, state_dir: Path
) -> Invoke:
    """``service --schedule S --contacts C --state-dir tmp ARGS`` in Chinese, clean env."""
    for name in ("SCHEDULE", "CONTACTS", "STATE_DIR", "DATABASE_URL", "CHANNELS_FILE"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    for name in ("DISPATCH_CONCURRENCY", "DISPATCH_UNRECORDED", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name if name.startswith("LC") else f"SERVICE_{name}", raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.setenv("SERVICE_TEMPLATES", str(ROOT / "templates"))
    runner = CliRunner()

    def invoke(*args: str, schedule: Path = schedule_path) -> Result:
        base = ["--schedule", str(schedule), "--contacts", str(contacts)]
        return runner.invoke(app, [*base, "--state-dir", str(state_dir), *args])

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused(result: Result) -> Result:
    """Exit 1 with one located line: never a Python traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    return result


def ledger_rows(state_dir: Path) -> list[tuple[object, ...]]:
    db = state_dir / "service.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT unit_id, obligation, period, count, submitted_at FROM submissions ORDER BY id"
        ).fetchall()


def rename_unit(contacts: Path, unit: str, name: str) -> None:
    """Give ``unit`` a new name in the copied units.csv (written with the csv module)."""
    import csv

    path = contacts / "units.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        if row[0] == unit:
            row[1] = name
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture
def model_warnings(contacts_dir: Path) -> Callable[[Path], list[str]]:
    """The campaign model's warnings for a schedule file, on the shipped directory."""
    from service.model import load_model

    return lambda schedule: load_model(schedule, contacts_dir).warnings()
