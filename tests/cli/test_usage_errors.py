"""Issue 12 item 3: click's usage errors reach the operator in Chinese (English on --lang en)."""

from __future__ import annotations

import pytest

from service.cli import app
from service.cli.usage import run, translate


def errors_of(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(app, list(args))
    return code, capsys.readouterr().err


def test_unknown_option_is_named_in_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    """`messages --frob`: exit 2, a Chinese usage line and the option named."""
    code, err = errors_of(capsys, "messages", "--frob")
    assert code == 2
    assert "用法：" in err and "没有这个选项：--frob" in err and "No such option" not in err


def test_unknown_command_is_named_in_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command: exit 2, 没有这个命令 naming it."""
    code, err = errors_of(capsys, "bogus")
    assert code == 2 and "没有这个命令：bogus" in err


def test_out_of_range_value_says_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """`messages --limit 0`: the option and its lower bound, in Chinese."""
    code, err = errors_of(capsys, "messages", "--limit", "0")
    assert code == 2 and "--limit" in err and "须大于或等于 1" in err


def test_non_integer_value_is_refused_in_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    """`messages --limit abc`: 须为整数."""
    code, err = errors_of(capsys, "messages", "--limit", "abc")
    assert code == 2 and "须为整数" in err


def test_english_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    """With --lang en the operator gets click's own English wording."""
    code, err = errors_of(capsys, "--lang", "en", "messages", "--frob")
    assert code == 2 and "No such option: --frob" in err


def test_unknown_wording_passes_through() -> None:
    """A message outside click's vocabulary is kept as is, never lost."""
    assert translate("something new from click 9") == "something new from click 9"
