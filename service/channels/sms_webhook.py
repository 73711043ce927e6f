"""Generic SMS gateway: an HTTP JSON webhook whose body is a Jinja2 template."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service.channels.base import (
    ChannelConfigError,
    Envelope,
    SendResult,
    mask_address,
    out_id_for,
)
from service.channels.sms_common import (
    Clock,
    HttpSmsChannel,
    error_for_status,
    read_secret,
    utc_now,
)

__all__ = ["WebhookSettings", "WebhookSms"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """Where and how to post; secrets are named by environment variable, never held.

    ``body_template`` sees ``key, to, name, template, params, text``; use ``|tojson``
    for values so quotes and newlines stay valid JSON. ``provider_id_field`` is a
    dotted path into the JSON reply (``data.id``).
    """

    url: str
    body_template: str
    token_env: str | None = None
    hmac_secret_env: str | None = None
    signature_header: str = "X-Signature-SHA256"
    provider_id_field: str | None = None
    timeout: float = 5.0


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    # Keep Chinese readable in the body instead of \uXXXX escapes.
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}
    return env


def _lookup(data: Any, dotted: str) -> str | None:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return None if data is None or isinstance(data, dict | list) else str(data)


class WebhookSms(HttpSmsChannel):
    """POSTs a rendered JSON body; any 2xx means the gateway accepted the message."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        env = os.environ if environ is None else environ
        self._settings = settings
        self._token = read_secret(settings.token_env, env) if settings.token_env else None
        self._hmac_key = (
            read_secret(settings.hmac_secret_env, env).encode()
            if settings.hmac_secret_env
            else None
        )
        try:
            self._template = _environment().from_string(settings.body_template)
        except TemplateError as exc:
            raise ChannelConfigError(
                f"短信网关请求体模板有误：{exc}", code="WEBHOOK_TEMPLATE"
            ) from exc
        super().__init__(client=client, timeout=settings.timeout, clock=clock)

    def __repr__(self) -> str:
        return f"WebhookSms(url={self._settings.url!r})"

    def _body(self, envelope: Envelope) -> bytes:
        context = {
            "key": envelope.key,
            "to": envelope.address,
            "name": envelope.recipient_name,
            "template": envelope.sms_template,
            "params": dict(envelope.sms_params),
            "text": envelope.text,
        }
        try:
            rendered = self._template.render(context)
        # Operator-authored template: whatever it raises is a configuration fault.
        except Exception as exc:
            raise ChannelConfigError(
                f"短信网关请求体模板渲染失败：{type(exc).__name__}",
                code="WEBHOOK_TEMPLATE",
            ) from exc
        try:
            json.loads(rendered)
        except ValueError as exc:
            raise ChannelConfigError(
                "短信网关请求体模板生成的不是合法 JSON", code="WEBHOOK_BODY_NOT_JSON"
            ) from exc
        return rendered.encode()

    def _headers(self, envelope: Envelope, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            # Lets a gateway that supports it drop a resend after our crash.
            "Idempotency-Key": out_id_for(envelope.key),
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._hmac_key is not None:
            digest = hmac.new(self._hmac_key, body, hashlib.sha256).hexdigest()
            headers[self._settings.signature_header] = f"sha256={digest}"
        return headers

    async def send(self, envelope: Envelope) -> SendResult:
        """Post the envelope; raise a :class:`DeliveryError` unless the reply is 2xx."""
        body = self._body(envelope)
        headers = self._headers(envelope, body)
        response = await self._post(self._settings.url, headers=headers, content=body)
        error = error_for_status(response, self._clock())
        if error is not None:
            log.warning(
                "webhook sms to %s failed: %s",
                mask_address(envelope.address),
                error.code,
            )
            raise error
        log.debug("webhook sms to %s accepted", mask_address(envelope.address))
        return SendResult(
            provider_id=self._provider_id(response),
            detail=f"HTTP {response.status_code}",
        )

    def _provider_id(self, response: httpx.Response) -> str | None:
        field_path = self._settings.provider_id_field
        if not field_path:
            return None
        try:
            return _lookup(response.json(), field_path)
        except ValueError:
            return None
