"""Issue 12 point 3: Chinese by default; English with --lang en or LANG=en_*."""

from __future__ import annotations

import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from service.cli.i18n import counts_line, env_lang, reason, set_lang

from .conftest import Invoke, ok

SHANGHAI = ZoneInfo("Asia/Shanghai")


def service(*args: str, lang: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env["LANG"] = lang
    return subprocess.run(
        [sys.executable, "-m", "service", *args], capture_output=True, text=True, env=env,
        check=False, timeout=60,
    )  # fmt: skip


def test_help_is_chinese_by_default() -> None:
    """``service status --help`` under a Chinese locale is in Chinese."""
    out = service("status", "--help", lang="zh_CN.UTF-8").stdout
    assert "各单位各周期" in out and "评估时刻" in out


def test_help_is_english_with_lang_option() -> None:
    """``service --lang en status --help`` is in English."""
    out = service("--lang", "en", "status", "--help", lang="zh_CN.UTF-8").stdout
    assert "For each unit and open occurrence" in out


def test_output_is_english_with_lang_en(cli: Invoke) -> None:
    """--lang en prints English headers and summaries."""
    out = ok(cli("--lang", "en", "status", "--unit", "yanji", "--at", "2023-06-26T09:00")).stdout
    assert "outstanding" in out and "overdue" in out and "逾期" not in out


def test_output_is_english_with_english_locale(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LANG=en_US.UTF-8 alone switches to English."""
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    assert ok(cli("migrate")).stdout.strip() == "schema is up to date"


def test_output_is_chinese_by_default(cli: Invoke) -> None:
    """Without a language the summary line and headers are Chinese."""
    out = ok(cli("status", "--unit", "yanji", "--at", "2023-06-26T09:00")).stdout
    assert "单位" in out and "已完成" in out and "逾期" in out


def test_bad_lang_is_refused(cli: Invoke) -> None:
    """--lang fr is refused naming zh and en."""
    result = cli("--lang", "fr", "validate")
    assert result.exit_code == 1 and "zh | en" in result.stderr


def test_locale_order() -> None:
    """LC_ALL beats LANG; --lang beats both."""
    assert env_lang([], {"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"
    assert env_lang([], {"LANG": "zh_CN.UTF-8"}) == "zh"
    assert env_lang(["--lang", "zh"], {"LC_ALL": "en_US"}) == "zh"
    assert env_lang([], {}) == "zh"


def test_counts_are_words_not_a_dict() -> None:
    """{'cancelled': 25, 'sent': 914} reads 已发送 914 · 已取消 25."""
    set_lang("zh")
    assert counts_line({"cancelled": 25, "sent": 914}) == "已发送 914 · 已取消 25"


def test_reasons_are_translated_and_local() -> None:
    """A stored English reason with UTC times is shown in Chinese, in +08:00."""
    set_lang("zh")
    text = reason("expired at 2023-06-20T09:00:00+00:00", SHANGHAI)
    assert text == "已于 2023-06-20T17:00:00+08:00 过期"
    assert (
        reason("reason disappeared: submitted meanwhile", SHANGHAI) == "提醒理由已消失：期间已报送"
    )


def test_every_catalogue_entry_has_both_languages() -> None:
    """No message is missing its Chinese or English text."""
    from service.cli.i18n import CATALOGUE

    assert all(zh and en for zh, en in CATALOGUE.values())
