"""The office mailbox against a real Dovecot: one pass records, flags, never deletes."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import threading

import pytest

from service.clock import RealClock, VirtualClock
from service.intake.core import Intake
from service.intake.mail import parse_mail
from service.intake.mailbox import DONE, MailboxConfig, poll, watch
from tests.intake.conftest import Deliver, make_mail, progress_form

NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]


def _flags(env: dict[str, str], folder: str = "INBOX") -> list[bytes]:
    conn = imaplib.IMAP4(env["SERVICE_IMAP_HOST"], int(env["SERVICE_IMAP_PORT"]))
    try:
        conn.login(env["SERVICE_IMAP_USER"], env["SERVICE_IMAP_PASSWORD"])
        typ, count = conn.select(folder)
        if typ != "OK" or count[0] == b"0":
            return []
        typ, data = conn.fetch("1:*", "(FLAGS)")
        return [d for d in data if isinstance(d, bytes)]
    finally:
        conn.logout()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def _mail(unit_name: str = "白山市安委会办公室", mid: str = "<w22-baishan@example.org>") -> bytes:
    return make_mail(
        "baishan-liaison@example.org",
        [("附件2-白山市.xlsx", progress_form(unit_name, NUMBERS))],
        message_id=mid,
    )


async def test_poll_records_the_attached_form(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """A liaison's mail with a filled 附件2 is recorded as inbound mail."""
    deliver(_mail())
    result = await poll(intake, MailboxConfig.from_env(mailbox_env))
    assert [o.status for o in result.outcomes] == ["recorded"]
    [row] = await intake.ledger.history("baishan")
    assert (row.obligation, row.period, row.source) == (
        "weekly-progress",
        "2023-W22",
        "inbound-mail",
    )


async def test_handled_mail_is_flagged_not_deleted(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """After the pass the message is still there, carrying the $Recorded keyword."""
    deliver(_mail())
    await poll(intake, MailboxConfig.from_env(mailbox_env))
    [flags] = _flags(mailbox_env)
    assert DONE.encode() in flags and b"\\Deleted" not in flags


async def test_second_poll_fetches_nothing(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """Flagged messages are not fetched again."""
    deliver(_mail())
    cfg = MailboxConfig.from_env(mailbox_env)
    await poll(intake, cfg)
    assert (await poll(intake, cfg)).fetched == 0


async def test_same_mail_delivered_twice_records_once(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """The same e-mail arriving again (a resend) is reported as a duplicate."""
    cfg = MailboxConfig.from_env(mailbox_env)
    deliver(_mail())
    await poll(intake, cfg)
    deliver(_mail())
    result = await poll(intake, cfg)
    assert [o.status for o in result.outcomes] == ["duplicate"]
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_unplaceable_mail_goes_to_review_and_is_flagged(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """A mail intake cannot place is handled: a review item, the message flagged."""
    deliver(make_mail("stranger@example.net", subject="你好"))
    await poll(intake, MailboxConfig.from_env(mailbox_env))
    assert len(await intake.store.reviews()) == 1
    [flags] = _flags(mailbox_env)
    assert DONE.encode() in flags


async def test_move_to_folder_moves_handled_mail(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """With SERVICE_IMAP_MOVE_TO the handled message moves there (and is kept)."""
    env = {**mailbox_env}
    deliver(_mail())
    conn = imaplib.IMAP4(env["SERVICE_IMAP_HOST"], int(env["SERVICE_IMAP_PORT"]))
    conn.login(env["SERVICE_IMAP_USER"], env["SERVICE_IMAP_PASSWORD"])
    conn.create("Recorded")
    conn.logout()
    await poll(intake, MailboxConfig.from_env({**env, "SERVICE_IMAP_MOVE_TO": "Recorded"}))
    assert _flags(env) == [] and len(_flags(env, "Recorded")) == 1


async def test_wrong_password_raises_an_imap_error(
    intake: Intake, mailbox_env: dict[str, str]
) -> None:
    """A login failure is an error for the operator, not a silent empty pass."""
    cfg = MailboxConfig.from_env({**mailbox_env, "SERVICE_IMAP_PASSWORD": "wrong"})
    with pytest.raises(imaplib.IMAP4.error):
        await poll(intake, cfg)


def test_missing_settings_are_named() -> None:
    """Without host, user or password the error names each variable."""
    from service.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        MailboxConfig.from_env({"SERVICE_IMAP_HOST": "h"})
    assert [p.field for p in exc.value.problems] == ["SERVICE_IMAP_USER", "SERVICE_IMAP_PASSWORD"]


def test_password_is_not_in_the_config_repr(mailbox_env: dict[str, str]) -> None:
    """The password never reaches logs through the config's repr."""
    assert mailbox_env["SERVICE_IMAP_PASSWORD"] not in repr(MailboxConfig.from_env(mailbox_env))


async def test_watch_keeps_polling_after_a_failed_pass(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str], received_clock: VirtualClock
) -> None:
    """A pass that cannot connect is logged and retried; the next one records the mail."""
    deliver(_mail())
    configs = iter(
        [
            MailboxConfig.from_env({**mailbox_env, "SERVICE_IMAP_PORT": str(_closed_port())}),
            MailboxConfig.from_env(mailbox_env),
        ]
    )
    stop = asyncio.Event()
    passes = 0

    def make() -> Intake:
        nonlocal passes
        passes += 1
        if passes == 2:
            stop.set()  # this pass still runs, then the watch ends
        return intake

    async def flaky_poll(i: Intake, _cfg: MailboxConfig) -> object:
        return await poll(i, next(configs))

    import service.intake.mailbox as mb

    original = mb.poll
    mb.poll = flaky_poll  # type: ignore[assignment]
    try:
        n = await watch(make, MailboxConfig.from_env(mailbox_env), received_clock, 1, stop)
    finally:
        mb.poll = original
    assert n == 2
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_a_message_intake_cannot_handle_is_parked_visibly(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure on one mail: review item, $IntakeFailed, the others go on."""
    deliver(make_mail("a@example.net", subject="坏邮件"))
    deliver(_mail())
    real = intake.take_message

    async def fragile(raw: bytes, *args: object, **kwargs: object) -> list[object]:
        if parse_mail(raw).subject == "坏邮件":
            raise RuntimeError("boom")
        return await real(raw)  # type: ignore[return-value]

    monkeypatch.setattr(intake, "take_message", fragile)
    result = await poll(intake, MailboxConfig.from_env(mailbox_env))
    assert (result.fetched, result.failed) == (2, 1)
    flags = _flags(mailbox_env)
    assert b"$IntakeFailed" in flags[0] and DONE.encode() in flags[1]
    [item] = await intake.store.reviews()
    assert "邮件处理失败" in item.reason


async def test_watch_wakes_on_new_mail_with_idle(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """Dovecot offers IDLE: a mail arriving while the watch idles is recorded long before
    the 60 s interval would have ended."""
    stop, idling = asyncio.Event(), threading.Event()
    cfg = MailboxConfig.from_env(mailbox_env)
    # A real clock: without IDLE the watch would sleep the whole minute.
    task = asyncio.ensure_future(watch(lambda: intake, cfg, RealClock(), 60, stop, idling))
    try:
        assert await asyncio.to_thread(idling.wait, 10), "the watch never entered IDLE"
        deliver(_mail())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 0:
            assert loop.time() < deadline, "IDLE did not wake the watch within 10 s"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        passes = await asyncio.wait_for(task, 10)
    assert passes >= 2


async def test_one_failing_mail_in_a_fetched_batch_is_parked_and_the_others_recorded(
    intake: Intake, deliver: Deliver, mailbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pass, one fetched batch, one group commit: a mail whose form raises while being
    read gets $IntakeFailed and a review item; the mails around it are recorded and flagged."""
    deliver(
        make_mail(
            "changchun-liaison@example.org",
            [("周报.xlsx", progress_form("长春市安委会办公室", NUMBERS))],
            message_id="<w22-changchun@example.org>",
        )
    )
    deliver(
        make_mail(
            "baishan-liaison@example.org",
            [("坏.xlsx", progress_form("白山市安委会办公室", [9, *NUMBERS[1:]]))],
            message_id="<bad@example.org>",
        )
    )
    deliver(_mail())
    real = intake.decide

    def fragile(grids: object, item: object, hints: object) -> object:
        if getattr(item, "filename", "") == "坏.xlsx":
            raise RuntimeError("boom")
        return real(grids, item, hints)  # type: ignore[arg-type]

    monkeypatch.setattr(intake, "decide", fragile)
    result = await poll(intake, MailboxConfig.from_env(mailbox_env))
    assert (result.fetched, result.failed) == (3, 1)
    assert [o.status for o in result.outcomes] == ["recorded", "recorded"]
    flags = _flags(mailbox_env)
    assert DONE.encode() in flags[0] and DONE.encode() in flags[2]
    assert b"$IntakeFailed" in flags[1] and DONE.encode() not in flags[1]
    [item] = await intake.store.reviews()
    assert "邮件处理失败" in item.reason
    assert await intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1
