"""Click's usage errors (unknown option, bad value, missing argument…) in the operator's
language. Click words them in English from a fixed vocabulary; we match that vocabulary and
pass anything unknown through unchanged, so a click upgrade can only leave a line English,
never lose it."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import click
import typer

from .i18n import env_lang, lang, set_lang, t

# Typer 0.2x vendors its own click (``typer._click``); its exceptions share a public base.
_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    getattr(typer, "TyperException", click.ClickException),
)

# Inner value messages of click's parameter types, and pydantic-style ones from typer.
_VALUE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^'?(.*?)'? is not a valid integer(?: range)?\.?$"), "“{0}”不是整数"),
    (re.compile(r"^'?(.*?)'? is not a valid float(?: range)?\.?$"), "“{0}”不是数字"),
    (re.compile(r"^(\S+) is not in the range (.+?)\.?$"), "{0} 不在范围 {1} 内"),
    (
        re.compile(r"^(\S+) is not (?:one of|a valid choice)[: ]*(.+?)\.?$"),
        "{0} 不是可选值之一：{1}",
    ),
    (re.compile(r"^'?(.*?)'? is not one of (.+?)\.?$"), "“{0}”不是可选值之一：{1}"),
    (re.compile(r"^Input should be greater than or equal to (\S+)$"), "须大于或等于 {0}"),
    (re.compile(r"^Input should be less than or equal to (\S+)$"), "须小于或等于 {0}"),
    (re.compile(r"^Input should be a valid integer.*$"), "须为整数"),
    (re.compile(r"^Input should be a valid number.*$"), "须为数字"),
    (re.compile(r"^(?:Path|File|Directory) '(.+)' does not exist\.?$"), "路径“{0}”不存在"),
]

_MESSAGE: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^No such option: (\S+?)\.? Did you mean (.+?)\?$"),
        "没有这个选项：{0}（您是否想用 {1}？）",
    ),
    (re.compile(r"^No such option:? '?(\S+?)'?\.?$"), "没有这个选项：{0}"),
    (re.compile(r"^No such command:? '?(.+?)'?\.?$"), "没有这个命令：{0}"),
    (re.compile(r"^Invalid value for (.+?): (.*)$", re.S), "{0} 的值无效：{1}"),
    (re.compile(r"^Missing option '?(.+?)'?\.?$"), "缺少选项 {0}"),
    (re.compile(r"^Missing argument '?(.+?)'?\.?$"), "缺少参数 {0}"),
    (re.compile(r"^Missing parameter:? ?(.*?)\.?$"), "缺少参数 {0}"),
    (re.compile(r"^Got unexpected extra arguments? \((.*)\)$"), "多余的参数：{0}"),
    (re.compile(r"^Option '?(.+?)'? requires an argument\.?$"), "选项 {0} 需要一个值"),
    (re.compile(r"^Option '?(.+?)'? does not take a value\.?$"), "选项 {0} 不接受值"),
]


def _value(text: str) -> str:
    for pattern, zh in _VALUE:
        if m := pattern.match(text.strip()):
            return zh.format(*m.groups())
    return text


def translate(message: str) -> str:
    """One usage error message in Chinese (unknown wording passes through)."""
    for pattern, zh in _MESSAGE:
        if m := pattern.match(message.strip()):
            groups = list(m.groups())
            if pattern.pattern.startswith("^Invalid value"):
                groups[1] = _value(groups[1])
            return zh.format(*groups)
    return message


def show(exc: Any) -> None:
    """What click prints for ``exc`` (a usage or parameter error), in the operator's
    language, on stderr."""
    if lang() == "en":
        exc.show()
        return
    out = sys.stderr
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        usage = ctx.get_usage().replace("Usage:", "用法：", 1)
        print(usage, file=out)
        print(f"运行 '{ctx.command_path} --help' 查看帮助。", file=out)
    print(f"{t('error')}: {translate(exc.format_message())}", file=out)


def run(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run the CLI without click's standalone error printing; returns the exit code."""
    # An unknown command fails before the main callback picks the language: pick it here.
    set_lang(env_lang(argv=None if args is None else list(args)))
    try:
        rv = app(args=args, standalone_mode=False)
    except (click.exceptions.Abort, typer.Abort):
        print("已中止 / aborted", file=sys.stderr)
        return 1
    except _ERRORS as exc:
        show(exc)
        return int(getattr(exc, "exit_code", 2))
    return rv if isinstance(rv, int) else 0
