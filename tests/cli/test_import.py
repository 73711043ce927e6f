"""Issue 12 point 2 / issue 8 item 10: imports are idempotent, explain themselves and read
what offices send (UTF-8 ± BOM, GB18030/GBK, XLSX, Chinese headers and dates)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Invoke, ledger_rows, ok, refused

ROWS = (
    "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
    "changchun,monthly-leads,2023-07,2,2023-07-20T10:00+08:00\n"
)
HEADER = "unit,obligation,period,count,at\n"


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "subs.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def summary(cli: Invoke, path: Path, *extra: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(ok(cli("import", "--json", *extra, str(path))).stdout)
    return result


def test_reimport_records_nothing_new(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """Importing the same file twice records its rows once; the second says already recorded."""
    path = write(tmp_path, HEADER + ROWS)
    first = summary(cli, path)
    second = summary(cli, path)
    assert (first["new"], first["already_recorded"]) == (2, 0)
    assert (second["new"], second["already_recorded"], second["conflicting"]) == (0, 2, 0)
    assert len(ledger_rows(state_dir)) == 2


def test_a_row_entered_by_hand_is_already_recorded(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """A row typed with submit (same unit, obligation, period, moment) is not doubled."""
    ok(cli("submit", "--unit", "yanji", "--obligation", "weekly-progress",
           "--period", "2023-W25", "--at", "2023-06-20T10:00"))  # fmt: skip
    got = summary(cli, write(tmp_path, HEADER + ROWS))
    assert (got["new"], got["already_recorded"]) == (1, 1)
    assert len(ledger_rows(state_dir)) == 2


def test_repeated_row_in_one_file_counts_once(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """A row repeated later in the same file is already recorded by its first copy."""
    got = summary(cli, write(tmp_path, HEADER + ROWS + ROWS))
    assert (got["new"], got["already_recorded"]) == (2, 2)
    assert len(ledger_rows(state_dir)) == 2


def test_conflicting_row_refuses_the_import(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """Same unit, obligation, period and moment, another count: refused on its line, no write."""
    ok(cli("import", str(write(tmp_path, HEADER + ROWS))))
    text = HEADER + ROWS.replace(",2,2023-07-20", ",3,2023-07-20")
    text += "hunchun,weekly-progress,2023-W25,1,2023-06-20T11:00\n"
    changed = write(tmp_path, text, name="b.csv")
    result = refused(cli("import", str(changed)))
    assert f"{changed}:3: count: 与已记录的报送" in result.stderr
    assert len(ledger_rows(state_dir)) == 2


def test_dry_run_writes_nothing(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """--dry-run reports what would be recorded and records nothing."""
    ok(cli("migrate"))
    result = ok(cli("import", "--dry-run", str(write(tmp_path, HEADER + ROWS))))
    assert "试运行，未写入" in result.stdout and "将新增 2" in result.stdout
    assert ledger_rows(state_dir) == []


def test_utf8_with_bom(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """A UTF-8 file with a BOM (Excel's "CSV UTF-8") imports, named UTF-8."""
    got = summary(cli, write(tmp_path, "\ufeff" + HEADER + ROWS))
    assert (got["encoding"], got["new"]) == ("UTF-8", 2)


def test_gbk_file_with_chinese_headers_names_its_encoding(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """A GBK CSV with 单位/事项/周期/数量/报送时间 headers and unit names imports as GB18030."""
    text = (
        "单位,事项,周期,数量,报送时间\n"
        "延吉市安委会办公室,weekly-progress,2023-W25,1,2023/6/20 10:00\n"
        "长春市安委会办公室,monthly-leads,2023-07,2,2023年7月20日\n"
    )
    path = write(tmp_path, text, "gbk")
    result = ok(cli("import", str(path)))
    assert "编码 GB18030" in result.stdout and "新增 2" in result.stdout
    rows = ledger_rows(state_dir)
    assert [r[0] for r in rows] == ["yanji", "changchun"]
    assert rows[0][4].startswith("2023-06-20 02:00")  # 10:00 +08:00 stored in UTC
    assert rows[1][4].startswith("2023-07-19 16:00")  # a date alone: its start, +08:00


def test_dash_form_with_space(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """``2023-06-20 10:00`` is read in the campaign's zone."""
    summary(cli, write(tmp_path, HEADER + "yanji,weekly-progress,2023-W25,1,2023-06-20 10:00\n"))
    assert ledger_rows(state_dir)[0][4].startswith("2023-06-20 02:00")


def test_undecodable_byte_names_the_right_line(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """A UTF-8 file with a GBK byte sequence on line 301 is refused at line 301."""
    ok(cli("migrate"))
    good = "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00,延吉\n"
    data = ("unit,obligation,period,count,at,note\n" + good * 299).encode()
    data += "hunchun,weekly-progress,2023-W25,1,2023-06-20T10:00,珲春\n".encode("gbk")
    data += (good * 2000).encode()
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    result = refused(cli("import", str(path)))
    assert f"{path}:301: 不是有效的 UTF-8 文本" in result.stderr
    assert ledger_rows(state_dir) == []


def test_xlsx_with_chinese_headers(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """An XLSX sheet with Chinese headers, a date cell and a text date imports."""
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["单位", "事项", "周期", "数量", "报送时间"])
    sheet.append(["yanji", "weekly-progress", "2023-W25", 1, datetime(2023, 6, 20, 10, 0)])  # noqa: DTZ001  (Excel cells have no zone)
    sheet.append(["长春市安委会办公室", "monthly-leads", "2023-07", 2, "2023/7/20 10:00"])
    path = tmp_path / "subs.xlsx"
    book.save(path)
    got = summary(cli, path)
    assert (got["encoding"], got["new"]) == ("XLSX", 2)
    assert [r[:4] for r in ledger_rows(state_dir)] == [
        ("yanji", "weekly-progress", "2023-W25", 1),
        ("changchun", "monthly-leads", "2023-07", 2),
    ]


def test_xlsx_formula_is_not_evaluated(cli: Invoke, state_dir: Path, tmp_path: Path) -> None:
    """A formula cell is refused with its row and column letter; nothing is written."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["单位", "事项", "周期", "数量"])
    sheet.append(["yanji", "weekly-progress", "2023-W25", "=1+1"])
    path = tmp_path / "subs.xlsx"
    book.save(path)
    ok(cli("migrate"))
    result = refused(cli("import", str(path)))
    assert f"{path}:2: 数量（D 列）: 公式单元格不计算" in result.stderr
    assert ledger_rows(state_dir) == []


def test_error_names_row_and_chinese_column(cli: Invoke, tmp_path: Path) -> None:
    """A bad cell under a Chinese header is reported with its line and that header, in Chinese."""
    text = "单位,事项,周期,数量\n延吉市安委会办公室,weekly-progress,2023-W25,一\n"
    result = refused(cli("import", str(write(tmp_path, text))))
    assert f"{tmp_path / 'subs.csv'}:2: 数量: 不是整数" in result.stderr


def test_nul_in_a_text_field_is_refused_with_its_place(
    cli: Invoke, state_dir: Path, tmp_path: Path
) -> None:
    """A NUL in the note column is refused on its line and column; nothing is written."""
    ok(cli("migrate"))
    text = "unit,obligation,period,count,at,note\nyanji,weekly-progress,2023-W25,1,,ok\x00\n"
    result = refused(cli("import", str(write(tmp_path, text))))
    assert f"{tmp_path / 'subs.csv'}:2: note: 含有控制字符 U+0000" in result.stderr
    assert ledger_rows(state_dir) == []


def test_missing_column_is_named_with_its_aliases(cli: Invoke, tmp_path: Path) -> None:
    """A file without a period column says which names would do."""
    result = refused(cli("import", str(write(tmp_path, "单位,事项\nyanji,weekly-progress\n"))))
    assert ":1: period: 缺少列" in result.stderr and "周期" in result.stderr
