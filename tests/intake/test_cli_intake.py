"""``service forms | intake | review | report`` in-process, state under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner, Result

from service.cli import app
from tests.conftest import ROOT
from tests.intake.conftest import Deliver, liaison_form, make_mail, progress_form

Invoke = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, contacts: Path, tmp_path: Path) -> Invoke:
    """Run ``service`` on the shipped schedule and a writable directory copy."""
    for name in ("SCHEDULE", "CONTACTS", "STATE_DIR", "DATABASE_URL", "CHANNELS_FILE"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    monkeypatch.setenv("SERVICE_TEMPLATES", str(ROOT / "templates"))
    runner = CliRunner()
    base = [
        "--schedule",
        str(ROOT / "schedules" / "jilin-2023.yaml"),
        "--contacts",
        str(contacts),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    return lambda *args: runner.invoke(app, [*base, *args])


def test_forms_writes_both_attachments_with_the_unit_prefilled(cli: Invoke, tmp_path: Path) -> None:
    """File names say the 附件 and obligation; the unit's name is in the first data row."""
    result = cli("forms", str(tmp_path / "out"), "--unit", "changchun")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [n.split("_")[:2] for n in names] == [
        ["附件1", "liaison-registration"],
        ["附件2", "weekly-progress"],
    ]
    ws = load_workbook(tmp_path / "out" / names[1]).active
    assert ws is not None and ws["A5"].value == "长春市安委会办公室"


def test_forms_with_unknown_unit_fails_naming_it(cli: Invoke, tmp_path: Path) -> None:
    """An unknown --unit is an error that names it; nothing is written."""
    result = cli("forms", str(tmp_path / "out"), "--unit", "nowhere")
    assert result.exit_code == 1 and "nowhere" in result.output
    assert not (tmp_path / "out").exists()


def test_intake_records_and_reports_a_duplicate(cli: Invoke, tmp_path: Path) -> None:
    """The first run records; the second says the file was already received."""
    path = tmp_path / "周报.xlsx"
    path.write_bytes(progress_form("长春市安委会办公室", [1, 2, 3]))
    first = cli("intake", str(path), "--period", "2023-W22")
    second = cli("intake", str(path))
    assert "[已登记]" in first.output and "weekly-progress@2023-W22" in first.output
    assert "[重复]" in second.output


def test_intake_of_a_macro_workbook_fails_with_the_reason(cli: Invoke, tmp_path: Path) -> None:
    """A refused file exits 1 with the Chinese reason."""
    path = tmp_path / "周报.xlsm"
    path.write_bytes(progress_form("长春市安委会办公室", [1]))
    result = cli("intake", str(path))
    assert result.exit_code == 1 and "宏" in result.output


def test_review_accept_applies_the_liaison_change(
    cli: Invoke, tmp_path: Path, contacts: Path
) -> None:
    """附件1 → review list shows the proposal → accept rewrites people.csv."""
    path = tmp_path / "附件1.xlsx"
    path.write_bytes(liaison_form("四平市安委会办公室", "赵六", "13900000099", "zl@example.org"))
    assert cli("intake", str(path)).exit_code == 0
    listing = cli("review", "list")
    assert "#1" in listing.output and "赵六" in listing.output
    accepted = cli("review", "accept", "1")
    assert accepted.exit_code == 0, accepted.output
    assert "siping-liaison,赵六,siping,liaison,,zl@example.org,+8613900000099" in (
        contacts / "people.csv"
    ).read_text(encoding="utf-8")


def test_report_writes_the_workbook(cli: Invoke, tmp_path: Path) -> None:
    """service report prints totals and who is missing, and writes the xlsx."""
    path = tmp_path / "周报.xlsx"
    path.write_bytes(progress_form("长春市安委会办公室", [4, 50]))
    cli("intake", str(path), "--period", "2023-W22")
    out = tmp_path / "汇总.xlsx"
    result = cli(
        "report",
        "--obligation",
        "weekly-progress",
        "--period",
        "2023-W22",
        "--scope",
        "changchun",
        "--xlsx",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "参与人次：50人次" in result.output and "未报送：" in result.output
    assert load_workbook(out).sheetnames[0] == "汇总"


def test_mailbox_poll_records_and_summarises(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch, mailbox_env: dict[str, str], deliver: Deliver
) -> None:
    """`service mailbox poll` with SERVICE_IMAP_* set: one pass, outcome lines, a summary."""
    for name, value in mailbox_env.items():
        monkeypatch.setenv(name, value)
    deliver(
        make_mail(
            "baishan-liaison@example.org",
            [("周报.xlsx", progress_form("白山市安委会办公室", [1, 2]))],
        )
    )
    result = cli("mailbox", "poll")
    assert result.exit_code == 0, result.output
    assert "[已登记] 周报.xlsx" in result.output and "本次收取 1 封邮件" in result.output


def test_mailbox_poll_without_settings_names_the_variables(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SERVICE_IMAP_* the command fails naming what is missing."""
    for name in ("HOST", "USER", "PASSWORD"):
        monkeypatch.delenv(f"SERVICE_IMAP_{name}", raising=False)
    result = cli("mailbox", "poll")
    assert result.exit_code == 1 and "SERVICE_IMAP_PASSWORD" in result.output


def test_review_show_lists_the_rows_and_their_problems(cli: Invoke, tmp_path: Path) -> None:
    """An unplaced file's item shows what was read and which cells are wrong."""
    path = tmp_path / "周报.xlsx"
    path.write_bytes(progress_form("火星市安委办", [-1, 2]))
    cli("intake", str(path))
    result = cli("review", "show", "1")
    assert result.exit_code == 0, result.output
    assert (
        "火星市安委办" in result.output
        and "问题：单元格 B5（宣传活动场次）：不能为负数" in result.output
    )
