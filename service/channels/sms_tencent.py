"""Tencent Cloud SMS: ``SendSms`` (2021-01-11) signed with TC3-HMAC-SHA256."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from service.channels.base import (
    ChannelConfigError,
    DeliveryError,
    Envelope,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    mask_address,
    out_id_for,
)
from service.channels.signing import (
    tc3_authorization,
    tc3_canonical_request,
    tc3_date,
    tc3_signature,
    tc3_string_to_sign,
)
from service.channels.sms_common import (
    Clock,
    HttpSmsChannel,
    TencentSettings,
    error_for_status,
    mainland_e164,
    ordered_params,
    read_secret,
    utc_now,
)

__all__ = ["TencentSms", "classify_tencent"]

log = logging.getLogger(__name__)

API_VERSION = "2021-01-11"
SERVICE = "sms"
CONTENT_TYPE = "application/json; charset=utf-8"
_BEIJING = timezone(timedelta(hours=8))

_TRANSIENT = frozenset({"RequestLimitExceeded", "InternalError.Timeout"})
_CONFIG = frozenset(
    {
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "InvalidParameterValue.SdkAppIdNotExist",
    }
)
_CONFIG_PREFIXES = ("AuthFailure", "UnauthorizedOperation")
_WINDOWS = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
}


def _until_beijing_midnight(now: datetime) -> float:
    local = now.astimezone(_BEIJING)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


def classify_tencent(code: str, message: str, *, now: datetime) -> DeliveryError:
    """The delivery error for a ``Response.Error`` or a per-number ``Code`` ≠ Ok."""
    text = f"{code}: {message}" if message else code
    if code in _TRANSIENT or code.startswith(("LimitExceeded", "RequestLimitExceeded")):
        hint = _WINDOWS.get(code)
        # Daily caps are per natural day in Beijing time.
        if hint is None and "DailyLimit" in code:
            hint = _until_beijing_midnight(now)
        return TransientDeliveryError(
            f"腾讯云短信限流或暂时故障（{text}）", code=code, retry_after=hint
        )
    if code in _CONFIG or code.startswith(_CONFIG_PREFIXES):
        return ChannelConfigError(f"腾讯云短信账号或模板配置错误（{text}）", code=code)
    return PermanentDeliveryError(f"腾讯云短信拒绝发送（{text}）", code=code)


class TencentSms(HttpSmsChannel):
    """Sends one templated SMS per envelope through Tencent Cloud ``SendSms``."""

    def __init__(
        self,
        settings: TencentSettings,
        *,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._settings = settings
        self._secret = read_secret(settings.secret_env, os.environ if environ is None else environ)
        url = httpx.URL(settings.endpoint)
        # The signed host must be byte-identical to the Host header actually sent.
        self._host = url.host if url.port is None else f"{url.host}:{url.port}"
        self._endpoint = str(url.copy_with(path="/"))
        super().__init__(client=client, timeout=settings.timeout, clock=clock)

    def __repr__(self) -> str:
        return f"TencentSms(endpoint={self._endpoint!r})"

    def _payload(self, envelope: Envelope) -> bytes:
        s = self._settings
        template = s.template(envelope.sms_template)
        values = ordered_params(template, envelope.sms_params, s.default_max_param_len)
        body = {
            "PhoneNumberSet": [mainland_e164(envelope.address)],
            "SmsSdkAppId": s.sms_sdk_app_id,
            "TemplateId": template.code,
            "SignName": s.sign_name,
            "TemplateParamSet": list(values),
            "SessionContext": out_id_for(envelope.key),
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _headers(self, payload: bytes) -> dict[str, str]:
        timestamp = int(self._clock().timestamp())
        signed = {
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": "SendSms",
        }
        canonical, signed_headers = tc3_canonical_request("POST", signed, payload)
        date = tc3_date(timestamp)
        string_to_sign = tc3_string_to_sign(timestamp, SERVICE, canonical)
        signature = tc3_signature(self._secret, date, SERVICE, string_to_sign)
        return {
            **signed,
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self._settings.region,
            "Authorization": tc3_authorization(
                self._settings.access_key_id, date, SERVICE, signed_headers, signature
            ),
        }

    async def send(self, envelope: Envelope) -> SendResult:
        """Submit the envelope; raise a :class:`DeliveryError` unless status is Ok."""
        payload = self._payload(envelope)
        response = await self._post(self._endpoint, headers=self._headers(payload), content=payload)
        try:
            result = self._interpret(response)
        except DeliveryError as exc:
            log.warning("tencent sms to %s failed: %s", mask_address(envelope.address), exc.code)
            raise
        log.info("tencent sms to %s accepted", mask_address(envelope.address))
        return result

    def _interpret(self, response: httpx.Response) -> SendResult:
        now = self._clock()
        data: Any
        try:
            data = response.json()
        except ValueError:
            data = None
        body = data.get("Response") if isinstance(data, dict) else None
        if isinstance(body, dict):
            error = body.get("Error")
            if isinstance(error, dict):
                code, message = (
                    str(error.get("Code", "")),
                    str(error.get("Message", "")),
                )
                raise classify_tencent(code, message, now=now)
            statuses = body.get("SendStatusSet")
            if isinstance(statuses, list) and statuses and isinstance(statuses[0], dict):
                status = statuses[0]
                code, message = (
                    str(status.get("Code", "")),
                    str(status.get("Message", "")),
                )
                if code == "Ok":
                    serial = status.get("SerialNo")
                    return SendResult(provider_id=str(serial) if serial else None, detail=message)
                raise classify_tencent(code, message, now=now)
        raise error_for_status(response, now) or TransientDeliveryError(
            "腾讯云短信应答无法解析，发送结果未知", code="BAD_RESPONSE"
        )
