"""TencentSms against a loopback SMS API that re-verifies every TC3 signature."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from service.channels.base import (
    Channel,
    ChannelConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    out_id_for,
)
from service.channels.sms_tencent import classify_tencent

NOW = datetime(2023, 6, 16, 1, 30, tzinfo=UTC)


async def test_accepted_message_returns_serial_no(make_tencent, make_envelope) -> None:
    """A correctly signed request is accepted and SerialNo becomes the provider id."""
    result = await make_tencent().send(make_envelope())
    assert result.provider_id == "2640:542926165416526640162009090"


async def test_channel_satisfies_the_protocol(make_tencent) -> None:
    """TencentSms is a Channel named ``sms``."""
    channel = make_tencent()
    assert isinstance(channel, Channel) and channel.name == "sms"


async def test_session_context_is_derived_from_the_key(
    make_tencent, make_envelope, tencent_server
) -> None:
    """SessionContext equals out_id_for(envelope.key)."""
    envelope = make_envelope()
    await make_tencent().send(envelope)
    _, body = tencent_server.provider.accepted[0]
    assert body["SessionContext"] == out_id_for(envelope.key)


async def test_chinese_sign_name_and_ordered_params_survive(
    make_tencent, make_envelope, tencent_server
) -> None:
    """SignName arrives intact and TemplateParamSet follows the template's order."""
    envelope = make_envelope(sms_params={"date": "6月16日", "unit": "应急管理厅"})
    await make_tencent().send(envelope)
    _, body = tencent_server.provider.accepted[0]
    assert (body["SignName"], body["TemplateParamSet"]) == (
        "吉林省应急管理厅",
        ["应急管理厅", "6月16日"],
    )


async def test_body_names_app_template_and_e164_number(
    make_tencent, make_envelope, tencent_server
) -> None:
    """SmsSdkAppId, TemplateId and an E.164 PhoneNumberSet are sent."""
    await make_tencent().send(make_envelope(address="186 4497 5330"))
    _, body = tencent_server.provider.accepted[0]
    assert (body["SmsSdkAppId"], body["TemplateId"], body["PhoneNumberSet"]) == (
        "1400006666",
        "1110",
        ["+8618644975330"],
    )


async def test_common_headers_follow_the_injected_clock(
    make_tencent, make_envelope, tencent_server
) -> None:
    """X-TC-Action, Version, Region and the injected clock's Timestamp are sent."""
    await make_tencent().send(make_envelope())
    headers, _ = tencent_server.provider.accepted[0]
    sent = {k: headers[k] for k in ("x-tc-action", "x-tc-version", "x-tc-region", "x-tc-timestamp")}
    assert sent == {
        "x-tc-action": "SendSms",
        "x-tc-version": "2021-01-11",
        "x-tc-region": "ap-guangzhou",
        "x-tc-timestamp": str(int(NOW.timestamp())),
    }


async def test_body_is_utf8_json_not_ascii_escapes(
    make_tencent, make_envelope, tencent_server
) -> None:
    """The signed payload carries raw UTF-8 Chinese, and it parses as JSON."""
    await make_tencent().send(make_envelope())
    raw = tencent_server.requests[0].body
    assert "吉林省应急管理厅".encode() in raw and json.loads(raw)["SignName"] == "吉林省应急管理厅"


async def test_wrong_secret_is_a_config_error(make_tencent, make_envelope, sms_environ) -> None:
    """The server's AuthFailure.SignatureFailure becomes ChannelConfigError."""
    channel = make_tencent(environ={**sms_environ, "TEST_TENCENT_SECRET": "not-the-key"})
    with pytest.raises(ChannelConfigError) as caught:
        await channel.send(make_envelope())
    assert caught.value.code == "AuthFailure.SignatureFailure"


async def test_unknown_secret_id_is_a_config_error(make_tencent, make_envelope) -> None:
    """AuthFailure.SecretIdNotFound becomes ChannelConfigError."""
    with pytest.raises(ChannelConfigError) as caught:
        await make_tencent(access_key_id="AKID-unknown").send(make_envelope())
    assert caught.value.code == "AuthFailure.SecretIdNotFound"


async def test_daily_limit_defers_to_beijing_midnight(
    make_tencent, make_envelope, tencent_server
) -> None:
    """LimitExceeded.PhoneNumberDailyLimit is transient until 00:00 Beijing time."""
    tencent_server.provider.answer = "throttle"
    with pytest.raises(TransientDeliveryError) as caught:
        await make_tencent().send(make_envelope())
    # 01:30 UTC is 09:30 in Beijing: 14.5 hours to midnight.
    assert (caught.value.code, caught.value.retry_after) == (
        "LimitExceeded.PhoneNumberDailyLimit",
        52200.0,
    )


async def test_incorrect_number_is_permanent(make_tencent, make_envelope, tencent_server) -> None:
    """InvalidParameterValue.IncorrectPhoneNumber fails the message, not the channel."""
    tencent_server.provider.answer = "invalid_number"
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_tencent().send(make_envelope())
    assert not isinstance(caught.value, ChannelConfigError)


async def test_request_limit_is_transient(make_tencent, make_envelope, tencent_server) -> None:
    """A request-level RequestLimitExceeded error is transient."""
    tencent_server.provider.answer = "request_limit"
    with pytest.raises(TransientDeliveryError):
        await make_tencent().send(make_envelope())


async def test_http_429_honours_retry_after(make_tencent, make_envelope, tencent_server) -> None:
    """HTTP 429 is transient and carries the Retry-After seconds."""
    tencent_server.fault = "http429"
    with pytest.raises(TransientDeliveryError) as caught:
        await make_tencent().send(make_envelope())
    assert caught.value.retry_after == 7.0


async def test_http_500_is_transient(make_tencent, make_envelope, tencent_server) -> None:
    """HTTP 500 without a Response body is transient."""
    tencent_server.fault = "http500"
    with pytest.raises(TransientDeliveryError):
        await make_tencent().send(make_envelope())


async def test_timeout_is_transient(make_tencent, make_envelope, tencent_server) -> None:
    """A server slower than the client timeout gives a transient error."""
    tencent_server.fault = "hang"
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError) as caught:
            await make_tencent(timeout=0.2).send(make_envelope())
    assert tencent_server.hung.is_set() and caught.value.code == "ReadTimeout"


async def test_too_long_parameter_fails_before_sending(
    make_tencent, make_envelope, tencent_server
) -> None:
    """Under Tencent's default 6-character limit a longer variable is refused."""
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_tencent().send(
            make_envelope(sms_params={"unit": "吉林省应急管理厅", "date": "6月16日"})
        )
    assert caught.value.code == "PARAM_LENGTH_LIMIT" and tencent_server.requests == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("LimitExceeded.PhoneNumberThirtySecondLimit", TransientDeliveryError),
        ("LimitExceeded.AppDailyLimit", TransientDeliveryError),
        ("InternalError.Timeout", TransientDeliveryError),
        ("FailedOperation.PhoneNumberInBlacklist", PermanentDeliveryError),
        ("FailedOperation.PhoneNumberParseFail", PermanentDeliveryError),
        ("InvalidParameterValue.TemplateParameterLengthLimit", PermanentDeliveryError),
        ("FailedOperation.TemplateIncorrectOrUnapproved", ChannelConfigError),
        ("FailedOperation.SignatureIncorrectOrUnapproved", ChannelConfigError),
        ("FailedOperation.InsufficientBalanceInSmsPackage", ChannelConfigError),
        ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", ChannelConfigError),
        ("AuthFailure.SignatureExpire", ChannelConfigError),
    ],
)
def test_code_table(code: str, expected: type[Exception]) -> None:
    """Each documented SendSms code maps to its class (§3.3)."""
    assert type(classify_tencent(code, "", now=NOW)) is expected


def test_thirty_second_limit_hints_thirty_seconds() -> None:
    """The 30-second window gives a 30 s retry hint."""
    error = classify_tencent("LimitExceeded.PhoneNumberThirtySecondLimit", "", now=NOW)
    assert error.retry_after == 30.0
