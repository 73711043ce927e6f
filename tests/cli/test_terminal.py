"""Issue 8 item 8: names are printed as data — no rich markup, no terminal escapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service import render

from .conftest import Invoke, ok, refused, rename_unit

AT = ["--at", "2023-06-26T10:00"]


@pytest.mark.parametrize("command", ["status", "overdue"])
def test_closing_markup_tag_in_a_unit_name_prints(
    cli: Invoke, contacts: Path, command: str
) -> None:
    """A unit named with ``[/]`` no longer crashes status/overdue; the name prints as is."""
    rename_unit(contacts, "yanji", "延吉[/]市")
    result = ok(cli(command, *AT))
    assert "延吉[/]市" in result.stdout


def test_link_markup_in_a_unit_name_is_shown(cli: Invoke, contacts: Path) -> None:
    """``[link=…]`` in a unit name is shown, not swallowed into a hyperlink."""
    rename_unit(contacts, "yanji", "[link=http://evil.example]延吉[/link]")
    result = ok(cli("status", "--unit", "yanji", *AT))
    assert "[link=http://evil.example]延吉[/link]" in result.stdout
    assert "\x1b]8;" not in result.stdout


def test_escape_sequences_in_a_unit_name_are_refused_where_written(
    cli: Invoke, contacts: Path
) -> None:
    """An ESC in a unit name is refused at load, naming units.csv's line and the field."""
    rename_unit(contacts, "yanji", "延吉\x1b[2J\x1b]0;pwned\x07市")
    result = refused(cli("status", "--unit", "yanji", *AT))
    assert "units.csv:" in result.output and "name" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output


def test_escape_sequences_from_elsewhere_are_made_visible() -> None:
    """Text from outside the directory (a mail server's reply kept as a reason) reaches the
    terminal with ESC and BEL as the visible text ``\\x1b``/``\\x07``, never as controls."""
    import io

    buf = io.StringIO()
    render.console(buf).print(
        render.table("标题", ["原因"], [["550 \x1b[2J\x1b]0;pwned\x07 rejected"]])
    )
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in out


def test_markup_in_the_campaign_name_is_shown(
    cli: Invoke, schedule_path: Path, write_schedule: Callable[[str], Path]
) -> None:
    """A campaign name with ``[/]`` (a table title) prints as written."""
    text = schedule_path.read_text(encoding="utf-8")
    [line] = [x for x in text.splitlines() if x.startswith("  name: ")]
    schedule = write_schedule(text.replace(line, "  name: 安全生产月[/]2023"))
    result = ok(cli("status", "--unit", "yanji", *AT, schedule=schedule))
    assert "安全生产月[/]2023" in result.stdout


def test_table_fits_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """With COLUMNS=100 (a 100-column terminal) no table line is wider than 100."""
    import io

    from rich.cells import cell_len

    monkeypatch.setenv("COLUMNS", "100")
    buf = io.StringIO()
    con = render.console(buf)
    rows = [["长春市安委会办公室" * 3, "weekly-progress", "2023-W25", "x" * 80, "已完成"]] * 3
    con.print(render.table("标题", ["单位", "事项", "周期", "截止时间", "状态"], rows))
    assert max(cell_len(line) for line in buf.getvalue().splitlines()) <= 100
