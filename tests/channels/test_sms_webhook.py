"""WebhookSms against a loopback gateway: rendering, auth headers, classification."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest

from service.channels.base import (
    Channel,
    ChannelConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    out_id_for,
)
from service.channels.sms_webhook import WebhookSettings, WebhookSms
from tests.channels.conftest import SMS_ENVIRON, WEBHOOK_BODY


async def test_body_is_rendered_with_every_variable(
    make_webhook, make_envelope, webhook_server
) -> None:
    """key, to, name, template, params and text reach the gateway, Chinese intact."""
    envelope = make_envelope()
    await make_webhook().send(envelope)
    assert json.loads(webhook_server.requests[0].body) == {
        "key": envelope.key,
        "to": "+8618644975330",
        "name": "张三",
        "template": "reminder",
        "params": {"unit": "应急管理厅", "date": "6月16日"},
        "text": envelope.text,
    }


async def test_channel_satisfies_the_protocol(make_webhook) -> None:
    """WebhookSms is a Channel named ``sms``."""
    channel = make_webhook()
    assert isinstance(channel, Channel) and channel.name == "sms"


async def test_provider_id_comes_from_the_configured_field(make_webhook, make_envelope) -> None:
    """A dotted provider_id_field picks the id out of the JSON reply."""
    result = await make_webhook(provider_id_field="data.id").send(make_envelope())
    assert result.provider_id == "msg-42"


async def test_provider_id_is_none_when_the_field_is_absent(make_webhook, make_envelope) -> None:
    """A reply without the configured field is still a success, with no id."""
    result = await make_webhook(provider_id_field="data.missing").send(make_envelope())
    assert result.provider_id is None


async def test_bearer_token_comes_from_the_environment(
    make_webhook, make_envelope, webhook_server
) -> None:
    """The token named by token_env is sent as a bearer token."""
    await make_webhook(token_env="TEST_WEBHOOK_TOKEN").send(make_envelope())
    assert webhook_server.requests[0].headers["authorization"] == "Bearer webhook-token"


async def test_hmac_header_signs_the_exact_body(
    make_webhook, make_envelope, webhook_server
) -> None:
    """The signature header is HMAC-SHA256 of the raw body under the shared key."""
    await make_webhook(hmac_secret_env="TEST_WEBHOOK_HMAC").send(make_envelope())
    request = webhook_server.requests[0]
    expected = hmac.new(b"webhook-hmac-key", request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-signature-sha256"] == f"sha256={expected}"


async def test_idempotency_key_is_derived_from_the_key(
    make_webhook, make_envelope, webhook_server
) -> None:
    """The Idempotency-Key header equals out_id_for(envelope.key)."""
    envelope = make_envelope()
    await make_webhook().send(envelope)
    assert webhook_server.requests[0].headers["idempotency-key"] == out_id_for(envelope.key)


async def test_undefined_variable_is_a_config_error(
    make_webhook, make_envelope, webhook_server
) -> None:
    """StrictUndefined turns a typo in the template into ChannelConfigError, unsent."""
    channel = make_webhook(body_template='{"to": {{ phone|tojson }}}')
    with pytest.raises(ChannelConfigError):
        await channel.send(make_envelope())
    assert webhook_server.requests == []


async def test_sandbox_blocks_attribute_escapes(make_webhook, make_envelope) -> None:
    """Reaching for dunder attributes is refused by the sandbox as a config error."""
    channel = make_webhook(body_template='{"x": "{{ key.__class__.__mro__ }}"}')
    with pytest.raises(ChannelConfigError):
        await channel.send(make_envelope())


async def test_non_json_rendering_is_a_config_error(make_webhook, make_envelope) -> None:
    """A template that renders invalid JSON is refused before sending."""
    with pytest.raises(ChannelConfigError) as caught:
        await make_webhook(body_template='{"to": "{{ to }}"').send(make_envelope())
    assert caught.value.code == "WEBHOOK_BODY_NOT_JSON"


async def test_template_syntax_error_fails_at_construction(make_webhook) -> None:
    """A template that does not compile cannot build a channel."""
    with pytest.raises(ChannelConfigError):
        make_webhook(body_template="{{ to ")


async def test_missing_token_variable_fails_at_construction(make_webhook) -> None:
    """A configured but unset token variable cannot build a channel."""
    with pytest.raises(ChannelConfigError, match="TEST_WEBHOOK_TOKEN"):
        make_webhook(token_env="TEST_WEBHOOK_TOKEN", environ={})


async def test_http_429_honours_retry_after(make_webhook, make_envelope, webhook_server) -> None:
    """HTTP 429 is transient and carries the Retry-After seconds."""
    webhook_server.fault = "http429"
    with pytest.raises(TransientDeliveryError) as caught:
        await make_webhook().send(make_envelope())
    assert caught.value.retry_after == 7.0


async def test_http_500_is_transient(make_webhook, make_envelope, webhook_server) -> None:
    """HTTP 500 is transient."""
    webhook_server.fault = "http500"
    with pytest.raises(TransientDeliveryError):
        await make_webhook().send(make_envelope())


async def test_http_400_is_permanent(
    make_webhook, make_envelope, webhook_server, reply_factory
) -> None:
    """A 4xx other than 429 is permanent, not a channel fault."""
    webhook_server.provider.reply = reply_factory(400, {"error": "bad number"})
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_webhook().send(make_envelope())
    assert not isinstance(caught.value, ChannelConfigError) and caught.value.code == "HTTP 400"


async def test_http_401_is_a_config_error(
    make_webhook, make_envelope, webhook_server, reply_factory
) -> None:
    """HTTP 401 means the credentials are wrong: ChannelConfigError."""
    webhook_server.provider.reply = reply_factory(401, {"error": "unauthorized"})
    with pytest.raises(ChannelConfigError):
        await make_webhook().send(make_envelope())


async def test_timeout_is_transient(make_webhook, make_envelope, webhook_server) -> None:
    """A gateway slower than the client timeout gives a transient error."""
    webhook_server.fault = "hang"
    async with asyncio.timeout(5):
        with pytest.raises(TransientDeliveryError):
            await make_webhook(timeout=0.2).send(make_envelope())
    assert webhook_server.hung.is_set()


async def test_non_json_success_reply_has_no_provider_id(
    make_webhook, make_envelope, webhook_server, reply_factory
) -> None:
    """A 2xx plain-text reply is a success with no provider id."""
    webhook_server.provider.reply = reply_factory(202, "accepted")
    result = await make_webhook(provider_id_field="id").send(make_envelope())
    assert result.provider_id is None


async def test_owned_client_keeps_concurrent_connections_alive(
    webhook_server, make_envelope
) -> None:
    """8 senders at a time (the dispatcher's default) keep reusing the same connections."""
    channel = WebhookSms(
        WebhookSettings(url=webhook_server.url + "send", body_template=WEBHOOK_BODY),
        environ=SMS_ENVIRON,
    )

    async def sender() -> None:
        for _ in range(10):
            await channel.send(make_envelope())

    try:
        await asyncio.gather(*(sender() for _ in range(8)))
    finally:
        await channel.aclose()
    assert len(webhook_server.requests) == 80
    assert webhook_server.connections <= 8
