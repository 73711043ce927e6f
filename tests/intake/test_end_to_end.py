"""End to end: the liaison's e-mail lands in Dovecot, one poll records it, the next cycle
cancels the pending reminder, and the same e-mail again changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.app import open_app
from service.clock import VirtualClock
from service.config import Settings
from service.daemon import Daemon
from service.intake.core import Intake
from service.intake.mailbox import MailboxConfig, cycle_hook, poll
from tests.conftest import ROOT, local
from tests.intake.conftest import Deliver, make_mail, progress_form

NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]


def _w22(rows: list[dict[str, Any]], recipient: str) -> list[str]:
    """Statuses of the due-day (0 working days before) W22 reminders of ``recipient``."""
    return sorted(
        f"{r['channel']}:{r['status']}"
        for r in rows
        if r["recipient_id"] == recipient
        and "weekly-progress@2023-W22" in r["periods"]
        and r["step"].endswith("-0wd")
    )


async def test_mail_in_dovecot_cancels_the_pending_reminder_and_resend_changes_nothing(
    tmp_path: Path, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """Planned reminder for baishan's W22 table: cancelled once the mail is polled."""
    settings = Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    clock = VirtualClock(local("2023-06-01T09:30"))
    raw = make_mail(
        "baishan-liaison@example.org",
        [("附件2-白山市.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
        date="2023-06-02T08:55",
    )
    async with open_app(settings, clock, durable_outbox=False) as app:
        await app.reconciler.run_cycle("e2e")  # the day before: first reminders sent
        clock.set(local("2023-06-02T09:00"))
        await app.reconciler.plan()  # the due-day reminders are now pending
        assert _w22(await app.outbox.rows(), "baishan-liaison") == ["email:pending", "sms:pending"]
        intake = Intake(app.runtime.model, app.outbox.engine, clock, tmp_path, "mailbox")
        cfg = MailboxConfig.from_env(mailbox_env)
        deliver(raw)
        assert [o.status for o in (await poll(intake, cfg)).outcomes] == ["recorded"]
        await app.reconciler.run_cycle("e2e")
        rows = await app.outbox.rows()
        assert _w22(rows, "baishan-liaison") == ["email:cancelled", "sms:cancelled"]
        assert _w22(rows, "changchun-liaison") == ["email:sent", "sms:sent"]  # still owed

        deliver(raw)  # the same e-mail again
        again = await poll(intake, cfg)
        await app.reconciler.run_cycle("e2e")
        assert [o.status for o in again.outcomes] == ["duplicate"]
        assert await app.outbox.rows() == rows
        assert await app.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_within_one_daemon_cycle_the_mail_cancels_the_reminder(
    tmp_path: Path, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """With the mailbox as the daemon's before-cycle work, one cycle records and cancels."""
    settings = Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    clock = VirtualClock(local("2023-06-01T09:30"))
    async with open_app(settings, clock, durable_outbox=False) as app:
        await app.reconciler.run_cycle("e2e")
        clock.set(local("2023-06-02T09:00"))
        await app.reconciler.plan()
        hook = cycle_hook(
            MailboxConfig.from_env(mailbox_env),
            lambda: Intake(app.runtime.model, app.outbox.engine, clock, tmp_path, "mailbox"),
        )
        daemon = Daemon(app, before_cycle=hook)
        deliver(
            make_mail(
                "baishan-liaison@example.org",
                [("附件2.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
                date="2023-06-02T08:55",
            )
        )
        await daemon.cycle("tick")
        assert _w22(await app.outbox.rows(), "baishan-liaison") == [
            "email:cancelled",
            "sms:cancelled",
        ]
