"""``service doctor``: a checklist of the whole configuration; exit 1 on any failure."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .. import render
from ..doctor import Check, run_checks
from .commands import app
from .common import Context, run_async, say
from .i18n import help_text, t


@app.command(help=help_text("cmd.doctor"))
def doctor(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option("--offline", help=help_text("opt.offline"))] = False,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> bool:
        checks = await run_checks(state.settings, offline=offline, now=state.clock.now())
        if os.environ.get("SERVICE_IMAP_HOST"):
            checks.append(await mailbox_check(offline))
        if json:
            say(
                render.dump_json(
                    {
                        "ok": all(c.ok for c in checks),
                        "checks": [
                            {"check": c.key, "ok": c.ok, "skipped": c.skipped, "detail": c.detail}
                            for c in checks
                        ],
                    }
                )
            )
        else:
            for c in checks:
                mark = "✓" if c.ok else "✗"
                if c.ok and c.skipped:
                    mark = "–"
                say(f"{mark} {t('check.' + c.key)}：{c.detail}")
            failed = sum(1 for c in checks if not c.ok)
            say(t("doctor_failed", n=failed) if failed else t("doctor_ok"))
        return all(c.ok for c in checks)

    if not run_async(ctx, go):
        raise typer.Exit(1)


async def mailbox_check(offline: bool) -> Check:
    """The office mailbox as ``service run`` will use it: settings, then login + SELECT."""
    import imaplib

    from ..errors import ConfigError
    from ..intake.mailbox import MailboxConfig, probe, safe_error

    try:
        cfg = MailboxConfig.from_env()
    except ConfigError as exc:
        return Check("mailbox", False, "；".join(str(p) for p in exc.problems))
    if offline:
        return Check("mailbox", True, "--offline：跳过联网检查", skipped=True)
    try:
        return Check("mailbox", True, await probe(cfg))
    except (OSError, imaplib.IMAP4.error) as exc:
        where = f"{cfg.host}:{cfg.port}"
        return Check(
            "mailbox", False, f"{where} 登录或打开文件夹 {cfg.folder} 失败：{safe_error(exc, cfg)}"
        )
