"""AliyunSms against a loopback dysmsapi that re-verifies every RPC V2 signature."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from service.channels.base import (
    Channel,
    ChannelConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    out_id_for,
)
from service.channels.sms_aliyun import AliyunSms, classify_aliyun
from service.channels.sms_common import AliyunSettings, SmsTemplate


async def test_accepted_message_returns_biz_id(make_aliyun, make_envelope) -> None:
    """A correctly signed request is accepted and BizId becomes the provider id."""
    result = await make_aliyun().send(make_envelope())
    assert result.provider_id == "900619746936498440^0"


async def test_channel_satisfies_the_protocol(make_aliyun) -> None:
    """AliyunSms is a Channel named ``sms``."""
    channel = make_aliyun()
    assert isinstance(channel, Channel) and channel.name == "sms"


async def test_out_id_is_derived_from_the_key(make_aliyun, make_envelope, aliyun_server) -> None:
    """OutId equals out_id_for(envelope.key)."""
    envelope = make_envelope()
    await make_aliyun().send(envelope)
    assert aliyun_server.provider.accepted[0]["OutId"] == out_id_for(envelope.key)


async def test_chinese_sign_name_and_params_survive(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """SignName and the TemplateParam JSON arrive as the same Chinese text."""
    await make_aliyun().send(make_envelope())
    params = aliyun_server.provider.accepted[0]
    assert params["SignName"] == "吉林省应急管理厅"
    assert json.loads(params["TemplateParam"]) == {
        "unit": "应急管理厅",
        "date": "6月16日",
    }


async def test_request_carries_the_send_sms_parameters(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """Action, Version, template, number, injected clock and nonce are all sent."""
    await make_aliyun().send(make_envelope())
    params = aliyun_server.provider.accepted[0]
    assert {k: params[k] for k in ("Action", "Version", "TemplateCode", "PhoneNumbers")} == {
        "Action": "SendSms",
        "Version": "2017-05-25",
        "TemplateCode": "SMS_465324001",
        "PhoneNumbers": "18644975330",
    }
    assert (params["Timestamp"], params["SignatureNonce"]) == (
        "2023-06-16T01:30:00Z",
        "nonce-0001",
    )


async def test_parameters_travel_in_the_query_of_a_post(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """The request is a POST with an empty body; the server checked it signed POST."""
    await make_aliyun().send(make_envelope())
    request = aliyun_server.requests[0]
    assert (request.method, request.body, "Signature" in request.query) == (
        "POST",
        b"",
        True,
    )


async def test_wrong_secret_is_a_config_error(make_aliyun, make_envelope, sms_environ) -> None:
    """The server's SignatureDoesNotMatch reply becomes ChannelConfigError."""
    channel = make_aliyun(environ={**sms_environ, "TEST_ALIYUN_SECRET": "not-the-secret"})
    with pytest.raises(ChannelConfigError) as caught:
        await channel.send(make_envelope())
    assert caught.value.code == "SignatureDoesNotMatch"


async def test_signature_error_text_hides_the_echoed_query(
    make_aliyun, make_envelope, sms_environ
) -> None:
    """The server echoes its string to sign; the error text must not show the number."""
    channel = make_aliyun(environ={**sms_environ, "TEST_ALIYUN_SECRET": "wrong"})
    with pytest.raises(ChannelConfigError) as caught:
        await channel.send(make_envelope())
    assert "18644975330" not in str(caught.value)


async def test_unknown_access_key_is_a_config_error(make_aliyun, make_envelope) -> None:
    """InvalidAccessKeyId.NotFound (HTTP 404) becomes ChannelConfigError."""
    with pytest.raises(ChannelConfigError) as caught:
        await make_aliyun(access_key_id="LTAI-unknown").send(make_envelope())
    assert caught.value.code == "InvalidAccessKeyId.NotFound"


async def test_each_send_uses_a_fresh_nonce(make_aliyun, make_envelope) -> None:
    """Two sends are both accepted although the server rejects replayed nonces."""
    channel = make_aliyun()
    results = [await channel.send(make_envelope()) for _ in range(2)]
    assert all(r.provider_id for r in results)


async def test_business_limit_control_is_transient(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """isv.BUSINESS_LIMIT_CONTROL defers with a one-day hint taken from the message."""
    aliyun_server.provider.answer = "throttle"
    with pytest.raises(TransientDeliveryError) as caught:
        await make_aliyun().send(make_envelope())
    assert (caught.value.code, caught.value.retry_after) == (
        "isv.BUSINESS_LIMIT_CONTROL",
        86400.0,
    )


async def test_illegal_number_is_permanent(make_aliyun, make_envelope, aliyun_server) -> None:
    """isv.MOBILE_NUMBER_ILLEGAL fails the message but is not a channel fault."""
    aliyun_server.provider.answer = "invalid_number"
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_aliyun().send(make_envelope())
    assert not isinstance(caught.value, ChannelConfigError)


async def test_unapproved_template_is_a_config_error(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """isv.SMS_TEMPLATE_ILLEGAL becomes ChannelConfigError."""
    aliyun_server.provider.answer = "template_illegal"
    with pytest.raises(ChannelConfigError):
        await make_aliyun().send(make_envelope())


async def test_http_429_honours_retry_after(make_aliyun, make_envelope, aliyun_server) -> None:
    """HTTP 429 is transient and carries the Retry-After seconds."""
    aliyun_server.fault = "http429"
    with pytest.raises(TransientDeliveryError) as caught:
        await make_aliyun().send(make_envelope())
    assert caught.value.retry_after == 7.0


async def test_http_500_is_transient(make_aliyun, make_envelope, aliyun_server) -> None:
    """HTTP 500 without a provider code is transient."""
    aliyun_server.fault = "http500"
    with pytest.raises(TransientDeliveryError):
        await make_aliyun().send(make_envelope())


async def test_timeout_is_transient(make_aliyun, make_envelope, aliyun_server) -> None:
    """A server slower than the client timeout gives a transient error."""
    aliyun_server.fault = "hang"
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError) as caught:
            await make_aliyun(timeout=0.2).send(make_envelope())
    assert aliyun_server.hung.is_set() and caught.value.code == "ReadTimeout"


async def test_unconfigured_template_fails_before_sending(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """An unknown logical template is a config error and nothing is sent."""
    with pytest.raises(ChannelConfigError):
        await make_aliyun().send(make_envelope(sms_template="escalation"))
    assert aliyun_server.requests == []


async def test_landline_fails_before_sending(make_aliyun, make_envelope, aliyun_server) -> None:
    """A landline number is refused locally as permanent."""
    with pytest.raises(PermanentDeliveryError):
        await make_aliyun().send(make_envelope(address="+8643188906114"))
    assert aliyun_server.requests == []


async def test_missing_secret_variable_fails_at_construction(make_aliyun) -> None:
    """A channel whose secret variable is unset cannot be built."""
    with pytest.raises(ChannelConfigError, match="TEST_ALIYUN_SECRET"):
        make_aliyun(environ={})


async def test_logs_hold_neither_secret_nor_full_number(
    make_aliyun, make_envelope, sms_environ, caplog
) -> None:
    """Our success and failure logs mask the number and never show the secret."""
    caplog.set_level(logging.DEBUG, logger="service.channels")
    await make_aliyun().send(make_envelope())
    with pytest.raises(ChannelConfigError):
        await make_aliyun(environ={**sms_environ, "TEST_ALIYUN_SECRET": "wrong"}).send(
            make_envelope()
        )
    # httpx itself logs the full URL at INFO; logging setup must mute it (see report).
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("service."))
    assert "+86186****5330" in text
    assert "18644975330" not in text and sms_environ["TEST_ALIYUN_SECRET"] not in text


async def test_aclose_leaves_an_injected_client_open(make_aliyun, http_client) -> None:
    """aclose does not close a client the caller owns."""
    await make_aliyun().aclose()
    assert not http_client.is_closed


async def test_aclose_closes_its_own_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel that built its own client (a proxy is configured) closes it."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    settings = AliyunSettings(access_key_id="id", secret_env="S", sign_name="签名")
    channel = AliyunSms(settings, environ={"S": "secret"})
    await channel.aclose()
    assert channel._client is not None and channel._client.is_closed


async def test_transport_failure_is_transient(make_envelope, sms_environ) -> None:
    """A refused connection is transient."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = AliyunSettings(
        access_key_id="id",
        secret_env="TEST_ALIYUN_SECRET",
        sign_name="签名",
        templates={"reminder": SmsTemplate("SMS_1", ("unit", "date"))},
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        channel = AliyunSms(settings, client=client, environ=sms_environ)
        with pytest.raises(TransientDeliveryError):
            await channel.send(make_envelope())


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("isv.DAY_LIMIT_CONTROL", TransientDeliveryError),
        ("Throttling.User", TransientDeliveryError),
        ("isp.SYSTEM_ERROR", TransientDeliveryError),
        ("isv.PARAM_LENGTH_LIMIT", PermanentDeliveryError),
        ("isv.BLACK_KEY_CONTROL_LIMIT", PermanentDeliveryError),
        ("isv.SMS_SIGNATURE_ILLEGAL", ChannelConfigError),
        ("isv.AMOUNT_NOT_ENOUGH", ChannelConfigError),
        ("InvalidAccessKeyId.Inactive", ChannelConfigError),
        ("isp.RAM_PERMISSION_DENY", ChannelConfigError),
    ],
)
def test_code_table(code: str, expected: type[Exception]) -> None:
    """Each documented SendSms code maps to its class (§2.4)."""
    assert type(classify_aliyun(code, "")) is expected
