"""find_accepted (StatusQuery) for AliyunSms and TencentSms against the loopback gateway.

The gateway re-verifies every signature, records each SMS it accepted and answers
QuerySendDetails / PullSmsSendStatusByPhoneNumber from those records. The ``late`` fault
lets the gateway accept a SendSms but hold its reply past the client's timeout: the
situation find_accepted exists for.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.channels.base import (
    Channel,
    ChannelConfigError,
    Envelope,
    PermanentDeliveryError,
    StatusQuery,
    TransientDeliveryError,
    out_id_for,
)
from service.channels.sms_aliyun import AliyunSms
from service.channels.sms_common import AliyunSettings, SmsTemplate
from service.channels.sms_tencent import TencentSms
from service.clock import VirtualClock
from service.dispatcher import Dispatcher, RetryPolicy
from service.runtime import Runtime
from service.store.ledger import Ledger
from service.store.outbox import Outbox
from tests.channels.conftest import (
    ALIYUN_KEY_ID,
    CHINA,
    FIXED_NOW,
    SIGN_NAME,
    SMS_ENVIRON,
    AliyunFake,
    LoopbackServer,
    SmsRecord,
    TencentFake,
)
from tests.conftest import local

PHONE = "18644975330"
SINCE = FIXED_NOW - timedelta(days=1)


def _aliyun(server: LoopbackServer) -> AliyunFake:
    return cast(AliyunFake, server.provider)


def _tencent(server: LoopbackServer) -> TencentFake:
    return cast(TencentFake, server.provider)


async def _time_out_after_acceptance(
    channel: AliyunSms | TencentSms, envelope: Envelope, server: LoopbackServer
) -> None:
    """SendSms is accepted by the gateway but its reply never arrives in time."""
    server.fault = "late"
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.send(envelope)
    assert caught.value.code == "ReadTimeout" and server.hung.is_set()
    server.fault = None


def _others(count: int, start: datetime, step: timedelta, **fields: Any) -> list[SmsRecord]:
    """``count`` accepted SMS to the same number for other messages."""
    return [
        SmsRecord(
            phone=PHONE,
            out_id=f"other-{i:04d}",
            sent_at=start - i * step,
            provider_id=f"other-{i}",
            **fields,
        )
        for i in range(count)
    ]


# --- Alibaba Cloud: QuerySendDetails ------------------------------------------------------


async def test_aliyun_is_a_status_query(make_aliyun) -> None:
    """AliyunSms satisfies both protocols, so the dispatcher asks it before resending."""
    channel = make_aliyun()
    assert isinstance(channel, Channel) and isinstance(channel, StatusQuery)


async def test_aliyun_finds_the_send_that_timed_out(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """A timed-out but accepted SendSms is found, waiting for its receipt, by its OutId."""
    channel, envelope = make_aliyun(timeout=0.2), make_envelope()
    await _time_out_after_acceptance(channel, envelope, aliyun_server)
    assert len(_aliyun(aliyun_server).sends(out_id_for(envelope.key))) == 1
    result = await channel.find_accepted(envelope, SINCE)
    assert result is not None
    assert (result.provider_id, result.detail) == (
        out_id_for(envelope.key),
        "found by QuerySendDetails",
    )
    (query,) = _aliyun(aliyun_server).queries()
    assert {k: query[k] for k in ("Version", "PhoneNumber", "SendDate", "PageSize")} == {
        "Version": "2017-05-25",
        "PhoneNumber": PHONE,
        "SendDate": "20230616",  # FIXED_NOW is 09:30 in China
        "PageSize": "50",
    }
    assert query["CurrentPage"] == "1" and "BizId" not in query


async def test_aliyun_delivered_record_is_found(make_aliyun, make_envelope, aliyun_server) -> None:
    """SendStatus 3 (delivered) counts as accepted."""
    channel, envelope = make_aliyun(), make_envelope()
    await channel.send(envelope)
    _aliyun(aliyun_server).mark(out_id_for(envelope.key), "delivered")
    assert await channel.find_accepted(envelope, SINCE) is not None


async def test_aliyun_nothing_sent_returns_none_after_asking_each_day(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """No record: None, after one query per China day from ``since`` to today, newest first."""
    assert await make_aliyun().find_accepted(make_envelope(), SINCE) is None
    dates = [q["SendDate"] for q in _aliyun(aliyun_server).queries()]
    assert dates == ["20230616", "20230615"]


async def test_aliyun_other_messages_do_not_count(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """Records of other OutIds to the same number are not this message."""
    channel = make_aliyun()
    await channel.send(make_envelope(key="jilin-2023/another/message/sms"))
    assert await channel.find_accepted(make_envelope(), SINCE) is None


async def test_aliyun_failed_record_returns_none(make_aliyun, make_envelope, aliyun_server) -> None:
    """SendStatus 2 (failed) means a resend is safe."""
    channel, envelope = make_aliyun(), make_envelope()
    await channel.send(envelope)
    _aliyun(aliyun_server).mark(out_id_for(envelope.key), "failed")
    assert await channel.find_accepted(envelope, SINCE) is None


async def test_aliyun_a_later_accepted_send_beats_an_earlier_failure(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """A failed attempt and a later accepted one for the same OutId: accepted."""
    envelope = make_envelope()
    out_id = out_id_for(envelope.key)
    fake = _aliyun(aliyun_server)
    fake.seed(
        SmsRecord(PHONE, out_id, FIXED_NOW - timedelta(hours=1), "b-1", status="failed"),
        SmsRecord(PHONE, out_id, FIXED_NOW - timedelta(minutes=1), "b-2"),
    )
    assert await make_aliyun().find_accepted(envelope, SINCE) is not None


async def test_aliyun_record_from_the_day_before_is_found(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """An attempt made yesterday (China time) is found in yesterday's SendDate."""
    envelope = make_envelope()
    yesterday = datetime(2023, 6, 15, 23, 50, tzinfo=CHINA)
    _aliyun(aliyun_server).seed(SmsRecord(PHONE, out_id_for(envelope.key), yesterday, "b-1"))
    assert await make_aliyun().find_accepted(envelope, SINCE) is not None
    assert [q["SendDate"] for q in _aliyun(aliyun_server).queries()] == ["20230616", "20230615"]


async def test_aliyun_pages_until_the_record_is_found(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """120 newer records of other messages: the target is on page 3 (50 per page)."""
    envelope = make_envelope()
    fake = _aliyun(aliyun_server)
    fake.seed(*_others(120, FIXED_NOW, timedelta(seconds=10)))
    fake.seed(SmsRecord(PHONE, out_id_for(envelope.key), FIXED_NOW - timedelta(hours=2), "b-1"))
    assert await make_aliyun().find_accepted(envelope, SINCE) is not None
    assert [q["CurrentPage"] for q in fake.queries()] == ["1", "2", "3"]
    assert len(aliyun_server.requests) == len(fake.accepted)  # every query verified


async def test_aliyun_paging_stops_at_total_count(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """Exactly 100 records that day: two full pages, TotalCount says there is no third."""
    fake = _aliyun(aliyun_server)
    fake.seed(*_others(100, FIXED_NOW, timedelta(seconds=10)))
    assert await make_aliyun().find_accepted(make_envelope(), FIXED_NOW) is None
    assert [(q["SendDate"], q["CurrentPage"]) for q in fake.queries()] == [
        ("20230616", "1"),
        ("20230616", "2"),
    ]


async def test_aliyun_lookback_is_capped_at_the_retention(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """A ``since`` 90 days back asks only the 30 days the provider keeps."""
    await make_aliyun().find_accepted(make_envelope(), FIXED_NOW - timedelta(days=90))
    dates = [q["SendDate"] for q in _aliyun(aliyun_server).queries()]
    assert (len(dates), dates[0], dates[-1]) == (30, "20230616", "20230518")


async def test_aliyun_query_with_wrong_secret_is_a_config_error(
    make_aliyun, make_envelope, sms_environ
) -> None:
    """The gateway verifies the query's signature too."""
    channel = make_aliyun(environ={**sms_environ, "TEST_ALIYUN_SECRET": "wrong"})
    with pytest.raises(ChannelConfigError) as caught:
        await channel.find_accepted(make_envelope(), SINCE)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert PHONE not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "expected", "code"),
    [
        ("throttle", TransientDeliveryError, "Throttling.User"),
        ("system_error", TransientDeliveryError, "isp.SYSTEM_ERROR"),
        ("ram_deny", ChannelConfigError, "isp.RAM_PERMISSION_DENY"),
    ],
)
async def test_aliyun_query_errors_are_classified(
    make_aliyun, make_envelope, aliyun_server, answer, expected, code
) -> None:
    """QuerySendDetails codes map like SendSms codes."""
    _aliyun(aliyun_server).query_answer = answer
    with pytest.raises(expected) as caught:
        await make_aliyun().find_accepted(make_envelope(), SINCE)
    assert type(caught.value) is expected and caught.value.code == code


@pytest.mark.parametrize("fault", ["http500", "http429", "hang"])
async def test_aliyun_query_transport_faults_are_transient(
    make_aliyun, make_envelope, aliyun_server, fault
) -> None:
    """A 5xx, a 429 or a query that times out cannot answer: transient."""
    aliyun_server.fault = fault
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError):
            await make_aliyun(timeout=0.2).find_accepted(make_envelope(), SINCE)


async def test_aliyun_invalid_number_fails_before_asking(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """A landline cannot have been sent to: permanent, and nothing is queried."""
    with pytest.raises(PermanentDeliveryError):
        await make_aliyun().find_accepted(make_envelope(address="+8643188906114"), SINCE)
    assert aliyun_server.requests == []


# --- Tencent Cloud: PullSmsSendStatusByPhoneNumber ---------------------------------------


async def test_tencent_is_a_status_query(make_tencent) -> None:
    """TencentSms satisfies both protocols."""
    channel = make_tencent()
    assert isinstance(channel, Channel) and isinstance(channel, StatusQuery)


async def test_tencent_finds_the_send_that_timed_out_once_delivered(
    make_tencent, make_envelope, tencent_server
) -> None:
    """Accepted, timed out, then a SUCCESS receipt: found by SessionContext, with SerialNo."""
    channel, envelope = make_tencent(timeout=0.2), make_envelope()
    await _time_out_after_acceptance(channel, envelope, tencent_server)
    fake = _tencent(tencent_server)
    fake.mark(out_id_for(envelope.key), "delivered")
    result = await channel.find_accepted(envelope, SINCE)
    assert result is not None
    assert (result.provider_id, result.detail) == (
        "2640:542926165416526640162009090",
        "found by PullSmsSendStatusByPhoneNumber",
    )
    (pull,) = fake.pulls()
    assert pull == {
        "BeginTime": int(SINCE.timestamp()),
        "EndTime": int(FIXED_NOW.timestamp()),
        "Offset": 0,
        "Limit": 100,
        "PhoneNumber": f"+86{PHONE}",
        "SmsSdkAppId": "1400006666",
    }
    assert len(fake.sends(out_id_for(envelope.key))) == 1


async def test_tencent_accepted_without_receipt_is_invisible(
    make_tencent, make_envelope, tencent_server
) -> None:
    """The residual window: no receipt yet means the pull cannot see it, so None."""
    channel, envelope = make_tencent(timeout=0.2), make_envelope()
    await _time_out_after_acceptance(channel, envelope, tencent_server)
    assert await channel.find_accepted(envelope, SINCE) is None


async def test_tencent_failed_receipt_returns_none(
    make_tencent, make_envelope, tencent_server
) -> None:
    """ReportStatus FAIL means a resend is safe."""
    channel, envelope = make_tencent(), make_envelope()
    await channel.send(envelope)
    _tencent(tencent_server).mark(out_id_for(envelope.key), "failed")
    assert await channel.find_accepted(envelope, SINCE) is None


async def test_tencent_nothing_sent_returns_none(
    make_tencent, make_envelope, tencent_server
) -> None:
    """No receipts at all: None after one pull."""
    assert await make_tencent().find_accepted(make_envelope(), SINCE) is None
    assert len(_tencent(tencent_server).pulls()) == 1


async def test_tencent_begin_time_is_clamped_to_seven_days(
    make_tencent, make_envelope, tencent_server
) -> None:
    """The API serves 7 days: an older ``since`` starts a minute inside that limit."""
    await make_tencent().find_accepted(make_envelope(), FIXED_NOW - timedelta(days=30))
    (pull,) = _tencent(tencent_server).pulls()
    assert pull["BeginTime"] == int((FIXED_NOW - timedelta(days=7)).timestamp()) + 60


async def test_tencent_full_pages_split_the_window(
    make_tencent, make_envelope, tencent_server
) -> None:
    """250 receipts of other messages: Offset stays 0, windows are halved until found."""
    envelope = make_envelope()
    fake = _tencent(tencent_server)
    fake.seed(*_others(250, FIXED_NOW, timedelta(minutes=5), status="delivered"))
    for record in fake.records:
        record.received_at = record.sent_at
    target = FIXED_NOW - timedelta(hours=3, seconds=30)
    fake.seed(SmsRecord(PHONE, out_id_for(envelope.key), target, "serial-target"))
    fake.mark(out_id_for(envelope.key), "delivered")
    result = await make_tencent().find_accepted(envelope, SINCE)
    assert result is not None and result.provider_id == "serial-target"
    pulls = fake.pulls()
    assert len(pulls) > 1 and {p["Offset"] for p in pulls} == {0}
    assert len(tencent_server.requests) == len(fake.accepted)  # every pull verified


async def test_tencent_unsplittable_full_page_is_transient(
    make_tencent, make_envelope, tencent_server
) -> None:
    """150 receipts in the same second cannot be told apart: ask again later."""
    fake = _tencent(tencent_server)
    fake.seed(*_others(150, FIXED_NOW, timedelta(0), status="delivered"))
    for record in fake.records:
        record.received_at = record.sent_at
    with pytest.raises(TransientDeliveryError) as caught:
        await make_tencent().find_accepted(make_envelope(), SINCE)
    assert caught.value.code == "QUERY_INCOMPLETE"


async def test_tencent_pull_with_wrong_key_is_a_config_error(
    make_tencent, make_envelope, sms_environ
) -> None:
    """The gateway verifies the pull's TC3 signature too."""
    channel = make_tencent(environ={**sms_environ, "TEST_TENCENT_SECRET": "wrong"})
    with pytest.raises(ChannelConfigError) as caught:
        await channel.find_accepted(make_envelope(), SINCE)
    assert caught.value.code == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("request_limit", TransientDeliveryError), ("unauthorized", ChannelConfigError)],
)
async def test_tencent_pull_errors_are_classified(
    make_tencent, make_envelope, tencent_server, answer, expected
) -> None:
    """Response.Error codes of the pull map like SendSms codes."""
    _tencent(tencent_server).query_answer = answer
    with pytest.raises(expected) as caught:
        await make_tencent().find_accepted(make_envelope(), SINCE)
    assert type(caught.value) is expected


@pytest.mark.parametrize("fault", ["http500", "http429", "hang"])
async def test_tencent_pull_transport_faults_are_transient(
    make_tencent, make_envelope, tencent_server, fault
) -> None:
    """A 5xx, a 429 or a pull that times out cannot answer: transient."""
    tencent_server.fault = fault
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError):
            await make_tencent(timeout=0.2).find_accepted(make_envelope(), SINCE)


# --- The dispatcher: a timed-out SMS is not sent twice -----------------------------------


async def test_dispatcher_retry_finds_the_accepted_sms_instead_of_resending(
    migrated_engine: AsyncEngine,
    runtime: Runtime,
    clock: VirtualClock,
    aliyun_server: LoopbackServer,
    http_client: httpx.AsyncClient,
) -> None:
    """First attempt times out after the gateway accepted it; the retry ends ``sent``
    from QuerySendDetails, and the gateway saw exactly one SendSms for that OutId."""
    sms = AliyunSms(
        AliyunSettings(
            endpoint=aliyun_server.url,
            access_key_id=ALIYUN_KEY_ID,
            secret_env="TEST_ALIYUN_SECRET",
            sign_name=SIGN_NAME,
            templates={"reminder": SmsTemplate("SMS_465324001", ("name", "item", "due"))},
            timeout=0.3,
        ),
        client=http_client,
        environ=SMS_ENVIRON,
        clock=clock.now,
    )
    outbox = Outbox(migrated_engine, "jilin-2023")
    dispatcher = Dispatcher(
        runtime,
        outbox,
        Ledger(migrated_engine, "jilin-2023", clock),
        {"sms": sms},
        clock,
        "w1",
        RetryPolicy(max_attempts=3, base_delay=60.0, max_delay=600.0),
    )
    wanted = ("changchun-liaison", "sms", "reminder1-2wd")
    planned = runtime.planner.plan({}, None, local("2023-05-18T09:00")).messages
    mine = [m for m in planned if (m.recipient_id, m.channel, m.step) == wanted]
    assert await outbox.insert(mine, clock.now()) == 1
    ((key, row),) = {r["idem_key"]: r for r in await outbox.rows()}.items()
    out_id = out_id_for(key)
    fake = _aliyun(aliyun_server)

    aliyun_server.fault = "late"
    async with asyncio.timeout(10):
        first = await dispatcher.run()
    row = (await outbox.rows())[0]
    assert (first.retried, row["status"], row["attempts"]) == (1, "pending", 1)
    assert "ReadTimeout" in row["reason"]
    assert len(fake.sends(out_id)) == 1 and fake.queries() == []

    aliyun_server.fault = None
    clock.set(row["next_attempt_at"])
    second = await dispatcher.run()
    row = (await outbox.rows())[0]
    assert (second.sent, row["status"], row["attempts"]) == (1, "sent", 2)
    assert row["provider_id"] == out_id
    assert len(fake.sends(out_id)) == 1  # no second SendSms reached the gateway
    assert [q["SendDate"] for q in fake.queries()] == ["20230518"]
