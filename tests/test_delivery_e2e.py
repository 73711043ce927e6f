"""The whole pipeline — plan, claim, render, send, record — against real local servers.

Each test runs ``Reconciler.run_cycle`` through ``open_app`` with a channels YAML file, a
virtual clock at 2023-05-18 09:05 (the liaison-registration reminders are due at 09:00)
and a real peer: an aiosmtpd server in the test's loop, or the loopback SMS gateway of
tests/channels/conftest.py that re-verifies Alibaba Cloud signatures.
"""

from __future__ import annotations

import csv
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from service.app import App, open_app
from service.channels.base import message_id_for, out_id_for
from service.clock import VirtualClock
from service.config import Settings
from service.store.tables import delivery_attempts
from tests.channels.conftest import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    SIGN_NAME,
    AliyunFake,
    LoopbackServer,
)
from tests.channels.smtp_server import (
    RecordingHandler,
    RunningServer,
    ScriptedDataHandler,
    running_server,
)
from tests.conftest import local

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "example.org"
AT = "2023-05-18T09:05"
SUBJECT = "【报送提醒】报送“安全生产月”活动联络员反馈表将于5月22日截止"
SECRET_ENV = "E2E_ALIYUN_SECRET"


def _liaison_emails() -> set[str]:
    with (ROOT / "contacts" / "people.csv").open(encoding="utf-8") as f:
        return {row["email"] for row in csv.DictReader(f) if row["role"] == "liaison"}


LIAISONS = _liaison_emails()


class RefuseAllHandler(RecordingHandler):
    """Answers every DATA with a permanent 550."""

    def data_status(self) -> str | None:
        return "550 5.7.1 message refused by policy"


def _smtp_yaml(server: RunningServer) -> str:
    return (
        f"email:\n  backend: smtp\n  host: {server.host}\n  port: {server.port}\n"
        f"  security: none\n  from_addr: noreply@{DOMAIN}\n  from_name: 报送提醒系统\n"
        "  pool_size: 2\n  timeout: 10\n"
    )


def _aliyun_yaml(server: LoopbackServer) -> str:
    return (
        f"sms:\n  backend: aliyun\n  access_key_id: {ALIYUN_KEY_ID}\n"
        f"  secret_env: {SECRET_ENV}\n  sign_name: {SIGN_NAME}\n  endpoint: {server.url}\n"
        "  allow_plaintext: true\n  timeout: 5\n  templates:\n"
        "    reminder: {code: SMS_465324001, params: [name, item, due]}\n"
    )


@dataclass
class Pipeline:
    app: App
    clock: VirtualClock

    async def cycle(self) -> None:
        await self.app.reconciler.run_cycle("e2e")

    async def rows(self, channel: str) -> list[dict[str, Any]]:
        return [r for r in await self.app.outbox.rows() if r["channel"] == channel]

    async def attempts(self, message_id: int) -> list[dict[str, Any]]:
        query = (
            sa.select(delivery_attempts)
            .where(delivery_attempts.c.message_id == message_id)
            .order_by(delivery_attempts.c.id)
        )
        async with self.app.outbox.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]


OpenPipeline = Callable[[str], AbstractAsyncContextManager[Pipeline]]


@pytest.fixture
def pipeline(tmp_path: Path) -> OpenPipeline:
    """Open the app on a channels YAML text, clock at 2023-05-18 09:05."""

    @asynccontextmanager
    async def open_(channels_yaml: str) -> AsyncIterator[Pipeline]:
        channels = tmp_path / "channels.yaml"
        channels.write_text(channels_yaml, encoding="utf-8")
        settings = Settings(
            schedule=ROOT / "schedules" / "jilin-2023.yaml",
            contacts=ROOT / "contacts",
            templates=ROOT / "templates",
            state_dir=tmp_path,
            channels_file=channels,
        )
        clock = VirtualClock(local(AT))
        async with open_app(settings, clock, durable_outbox=False) as app:
            yield Pipeline(app, clock)

    return open_


def _parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def _drain(handler: RecordingHandler) -> list[bytes]:
    out = []
    while not handler.messages.empty():
        out.append(handler.messages.get_nowait())
    return out


@dataclass
class SmtpRun:
    received: list[bytes]
    rows: list[dict[str, Any]]


@pytest.fixture
async def smtp_run(pipeline: OpenPipeline) -> SmtpRun:
    """One cycle at 09:05 against an accepting aiosmtpd server (security none)."""
    handler = RecordingHandler()
    async with running_server(handler) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        return SmtpRun(_drain(handler), await p.rows("email"))


# -- a. an accepting SMTP server -------------------------------------------------------


async def test_smtp_delivers_one_reminder_per_liaison(smtp_run: SmtpRun) -> None:
    """Every liaison of the shipped directory (26 units) receives exactly one email."""
    recipients = [str(_parse(raw)["To"].addresses[0].addr_spec) for raw in smtp_run.received]
    assert len(recipients) == 26
    assert sorted(recipients) == sorted(LIAISONS)


async def test_smtp_chinese_subject_is_rfc2047_encoded_and_decodes(smtp_run: SmtpRun) -> None:
    """The Chinese subject travels as ASCII (RFC 2047) and decodes to the rendered text."""
    for raw in smtp_run.received:
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        assert b"=?utf-8?" in head
        assert _parse(raw)["Subject"] == SUBJECT


async def test_smtp_message_id_derives_from_idempotency_key(smtp_run: SmtpRun) -> None:
    """Each Message-ID is message_id_for(key, domain) of the message's own key."""
    for raw in smtp_run.received:
        msg = _parse(raw)
        key = str(msg["X-Campaign-Key"]).strip()
        assert msg["Message-ID"] == message_id_for(key, DOMAIN)
    sent_keys = {str(_parse(raw)["X-Campaign-Key"]).strip() for raw in smtp_run.received}
    assert sent_keys == {r["idem_key"] for r in smtp_run.rows}


async def test_smtp_delivered_messages_are_recorded_sent(smtp_run: SmtpRun) -> None:
    """The outbox shows every email sent once, with the Message-ID as provider id."""
    assert len(smtp_run.rows) == 26
    for row in smtp_run.rows:
        assert (row["status"], row["attempts"], row["reason"]) == ("sent", 1, "")
        assert row["provider_id"] == message_id_for(row["idem_key"], DOMAIN)
        assert row["subject"] == SUBJECT


# -- b. 451 on DATA, then accepting -----------------------------------------------------

REFUSED = 3


async def test_smtp_451_puts_message_back_to_pending_with_backoff(
    pipeline: OpenPipeline,
) -> None:
    """A 451 on DATA leaves the message pending, attempts=1, next attempt in the future."""
    handler = ScriptedDataHandler(*["451 4.3.0 try again later"] * REFUSED)
    async with running_server(handler) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        rows = await p.rows("email")
    pending = [r for r in rows if r["status"] == "pending"]
    assert len(pending) == REFUSED
    assert sum(r["status"] == "sent" for r in rows) == 26 - REFUSED
    for row in pending:
        assert row["attempts"] == 1
        assert row["next_attempt_at"] > local(AT)
        assert "451" in row["reason"]


async def test_smtp_451_is_delivered_on_the_retry_cycle(pipeline: OpenPipeline) -> None:
    """After the backoff, another cycle delivers the refused messages; all 26 end sent."""
    handler = ScriptedDataHandler(*["451 4.3.0 try again later"] * REFUSED)
    async with running_server(handler) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        retry_at = max(
            r["next_attempt_at"] for r in await p.rows("email") if r["status"] == "pending"
        )
        p.clock.set(retry_at)
        await p.cycle()
        rows = await p.rows("email")
    assert [r["status"] for r in rows] == ["sent"] * 26
    assert handler.messages.qsize() == 26
    assert sorted(r["attempts"] for r in rows) == [1] * (26 - REFUSED) + [2] * REFUSED


async def test_smtp_451_leaves_a_transient_then_a_sent_attempt(pipeline: OpenPipeline) -> None:
    """delivery_attempts shows the 451 as a transient row, then the sent row."""
    handler = ScriptedDataHandler(*["451 4.3.0 try again later"] * REFUSED)
    async with running_server(handler) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        refused = [r for r in await p.rows("email") if r["status"] == "pending"]
        p.clock.set(max(r["next_attempt_at"] for r in refused))
        await p.cycle()
        histories = [await p.attempts(r["id"]) for r in refused]
    for history in histories:
        assert [a["outcome"] for a in history] == ["transient", "sent"]
        assert "451" in history[0]["error"]
        assert history[0]["at"] < history[1]["at"]


# -- c. 550 on DATA ---------------------------------------------------------------------


async def test_smtp_550_fails_the_message_with_the_reply_in_the_reason(
    pipeline: OpenPipeline,
) -> None:
    """A 550 on DATA ends the message failed at once, the 550 named in its reason."""
    async with running_server(RefuseAllHandler()) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        rows = await p.rows("email")
    assert len(rows) == 26
    for row in rows:
        assert (row["status"], row["attempts"]) == ("failed", 1)
        assert "550" in row["reason"]


async def test_smtp_550_is_never_retried(pipeline: OpenPipeline) -> None:
    """A day later no DATA is tried again and each message has one permanent attempt."""
    handler = RefuseAllHandler()
    async with running_server(handler) as server, pipeline(_smtp_yaml(server)) as p:
        await p.cycle()
        tried = handler.data_commands
        p.clock.set(local(AT) + timedelta(days=1))
        await p.cycle()
        rows = [r for r in await p.rows("email") if r["due_at"] <= local(AT)]
        histories = [await p.attempts(r["id"]) for r in rows]
    assert tried == 26
    assert handler.data_commands == tried
    assert [[a["outcome"] for a in h] for h in histories] == [["permanent"]] * 26


# -- d. SMS through the loopback Alibaba Cloud gateway ------------------------------------


@pytest.fixture
async def aliyun(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoopbackServer]:
    """The loopback SendSms gateway; the secret is in the environment the channel reads."""
    monkeypatch.setenv(SECRET_ENV, ALIYUN_SECRET)
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    server = LoopbackServer(AliyunFake({ALIYUN_KEY_ID: ALIYUN_SECRET}))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def _fake(server: LoopbackServer) -> AliyunFake:
    return cast(AliyunFake, server.provider)


async def test_aliyun_sms_is_sent_with_signatures_the_gateway_verifies(
    pipeline: OpenPipeline,
    aliyun: LoopbackServer,
) -> None:
    """All 26 SMS are sent; the gateway verified each signature and got our OutId."""
    async with pipeline(_aliyun_yaml(aliyun)) as p:
        await p.cycle()
        rows = await p.rows("sms")
    accepted = _fake(aliyun).accepted
    assert len(rows) == 26
    assert [r["status"] for r in rows] == ["sent"] * 26
    assert len(aliyun.requests) == len(accepted) == 26  # no request failed verification
    assert sorted(a["OutId"] for a in accepted) == sorted(out_id_for(r["idem_key"]) for r in rows)
    assert {a["TemplateCode"] for a in accepted} == {"SMS_465324001"}
    assert {r["provider_id"] for r in rows} == {"900619746936498440^0"}


async def test_aliyun_throttling_defers_the_sms_to_a_later_attempt(
    pipeline: OpenPipeline,
    aliyun: LoopbackServer,
) -> None:
    """A day-level flow-control answer leaves the SMS pending, retried no sooner than a day."""
    _fake(aliyun).answer = "throttle"
    async with pipeline(_aliyun_yaml(aliyun)) as p:
        await p.cycle()
        rows = await p.rows("sms")
    assert len(rows) == 26
    for row in rows:
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert "isv.BUSINESS_LIMIT_CONTROL" in row["reason"]
        assert row["next_attempt_at"] >= local(AT) + timedelta(days=1)


async def test_aliyun_throttled_sms_is_sent_on_the_retry(
    pipeline: OpenPipeline,
    aliyun: LoopbackServer,
) -> None:
    """Once the gateway accepts again, the retry cycle sends every throttled SMS."""
    fake = _fake(aliyun)
    fake.answer = "throttle"
    async with pipeline(_aliyun_yaml(aliyun)) as p:
        await p.cycle()
        first = await p.rows("sms")
        fake.answer = "ok"
        p.clock.set(max(r["next_attempt_at"] for r in first))
        await p.cycle()
        rows = [r for r in await p.rows("sms") if r["id"] in {f["id"] for f in first}]
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 2)] * 26
    assert all(r["sent_at"] > datetime.fromisoformat("2023-05-19T00:00+08:00") for r in rows)
