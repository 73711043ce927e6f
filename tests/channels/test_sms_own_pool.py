"""A channel without a borrowed client posts through its own connection pool (LeanTransport,
no client layers) and behaves exactly as with a client: same requests, results, errors."""

from __future__ import annotations

import socket

import httpx
import pytest

from service.channels.base import TransientDeliveryError, out_id_for


async def test_aliyun_through_its_own_pool_is_accepted(
    make_aliyun, make_envelope, aliyun_server
) -> None:
    """The signed request reaches the provider and BizId comes back as the provider id."""
    channel = make_aliyun(own_pool=True)
    envelope = make_envelope()
    try:
        result = await channel.send(envelope)
    finally:
        await channel.aclose()
    assert result.provider_id == "900619746936498440^0"
    assert aliyun_server.provider.accepted[0]["OutId"] == out_id_for(envelope.key)


async def test_tencent_through_its_own_pool_is_accepted(make_tencent, make_envelope) -> None:
    """The TC3-signed request is accepted and the SerialNo is the provider id."""
    channel = make_tencent(own_pool=True)
    try:
        result = await channel.send(make_envelope())
    finally:
        await channel.aclose()
    assert result.provider_id


async def test_webhook_through_its_own_pool_names_itself(
    make_webhook, make_envelope, webhook_server
) -> None:
    """The webhook body arrives intact with the service's User-Agent."""
    channel = make_webhook(own_pool=True)
    try:
        await channel.send(make_envelope())
    finally:
        await channel.aclose()
    request = webhook_server.requests[-1]
    assert "张三" in request.body.decode()
    assert request.headers["user-agent"].startswith("campaign-reminders")


async def test_own_pool_is_closed_by_aclose(make_webhook, make_envelope) -> None:
    """aclose drops the pool's keep-alive connections."""
    channel = make_webhook(own_pool=True)
    await channel.send(make_envelope())
    transport = channel._transport
    assert transport is not None
    assert transport.open_connections == 1
    await channel.aclose()
    assert transport.open_connections == 0


async def test_refused_connection_through_own_pool_is_transient(
    make_webhook, make_envelope
) -> None:
    """Nobody listening: a transient error, as through a client."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = make_webhook(own_pool=True, url=f"http://127.0.0.1:{port}/send")
    try:
        with pytest.raises(TransientDeliveryError):
            await channel.send(make_envelope())
    finally:
        await channel.aclose()


async def test_a_proxy_in_the_environment_is_honoured_through_a_client(
    make_webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTPS_PROXY set the channel keeps httpx's client (which applies the proxy)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    channel = make_webhook(own_pool=True)
    try:
        assert channel._transport is None
        assert isinstance(channel._client, httpx.AsyncClient)
    finally:
        await channel.aclose()
