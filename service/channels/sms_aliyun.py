"""Alibaba Cloud SMS: ``SendSms`` (2017-05-25) signed with RPC V2 HMAC-SHA1."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC
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
    aliyun_canonical_query,
    aliyun_rpc_signature,
    percent_encode,
)
from service.channels.sms_common import (
    AliyunSettings,
    Clock,
    HttpSmsChannel,
    error_for_status,
    mainland_e164,
    ordered_params,
    read_secret,
    retry_after_seconds,
    utc_now,
)

__all__ = ["AliyunSms", "classify_aliyun"]

log = logging.getLogger(__name__)

API_VERSION = "2017-05-25"

_TRANSIENT = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "isp.SYSTEM_ERROR",
        "ServiceUnavailable",
        "InternalError",
        # Only this attempt's nonce clashed; a new attempt gets a fresh one.
        "SignatureNonceUsed",
    }
)
_CONFIG = frozenset(
    {
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
        "isv.SIGN_STATE_ILLEGAL",
        "isv.SMS_CONTENT_ILLEGAL",
        "isv.OUT_OF_SERVICE",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.PRODUCT_UNSUBSCRIBE",
        "isv.ACCOUNT_ABNORMAL",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.DENY_IP_RANGE",
        "isp.RAM_PERMISSION_DENY",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAccessKeyId",
    }
)
_CONFIG_PREFIXES = ("InvalidAccessKeyId", "InvalidTimeStamp", "Forbidden")
# Flow-control windows named in isv.BUSINESS_LIMIT_CONTROL messages.
_WINDOWS = (("分钟级", 60.0), ("小时级", 3600.0), ("天级", 86400.0))


def classify_aliyun(code: str, message: str, *, retry_after: float | None = None) -> DeliveryError:
    """The delivery error for a non-``OK`` SendSms ``Code``."""
    # SignatureDoesNotMatch echoes the whole query (phone number included) after this
    # marker; the error text ends up in logs and the outbox, so drop it.
    message = message.split("server string to sign is")[0].strip()[:200]
    text = f"{code}: {message}" if message else code
    if code in _TRANSIENT or code.startswith("Throttling"):
        if retry_after is None and code == "isv.BUSINESS_LIMIT_CONTROL":
            retry_after = next((s for word, s in _WINDOWS if word in message), None)
        return TransientDeliveryError(
            f"阿里云短信限流或暂时故障（{text}）", code=code, retry_after=retry_after
        )
    if code in _CONFIG or code.startswith(_CONFIG_PREFIXES):
        return ChannelConfigError(f"阿里云短信账号或模板配置错误（{text}）", code=code)
    return PermanentDeliveryError(f"阿里云短信拒绝发送（{text}）", code=code)


def _new_nonce() -> str:
    return uuid.uuid4().hex


class AliyunSms(HttpSmsChannel):
    """Sends one templated SMS per envelope through Alibaba Cloud ``SendSms``."""

    def __init__(
        self,
        settings: AliyunSettings,
        *,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
        nonce_factory: Callable[[], str] = _new_nonce,
    ) -> None:
        self._settings = settings
        self._secret = read_secret(settings.secret_env, os.environ if environ is None else environ)
        self._nonce = nonce_factory
        self._endpoint = settings.endpoint.rstrip("/") + "/"
        super().__init__(client=client, timeout=settings.timeout, clock=clock)

    def __repr__(self) -> str:
        return f"AliyunSms(endpoint={self._endpoint!r})"

    def _query(self, envelope: Envelope) -> str:
        s = self._settings
        template = s.template(envelope.sms_template)
        values = ordered_params(template, envelope.sms_params, s.default_max_param_len)
        phone = mainland_e164(envelope.address)
        params = {
            "AccessKeyId": s.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": s.region_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            "PhoneNumbers": phone.removeprefix("+86"),
            "SignName": s.sign_name,
            "TemplateCode": template.code,
            "OutId": out_id_for(envelope.key),
        }
        if template.params:
            mapping = dict(zip(template.params, values, strict=True))
            params["TemplateParam"] = json.dumps(mapping, ensure_ascii=False, separators=(",", ":"))
        signature = aliyun_rpc_signature(self._secret, "POST", params)
        return f"{aliyun_canonical_query(params)}&Signature={percent_encode(signature)}"

    async def send(self, envelope: Envelope) -> SendResult:
        """Submit the envelope; raise a :class:`DeliveryError` unless Code is ``OK``."""
        url = f"{self._endpoint}?{self._query(envelope)}"
        response = await self._post(url, headers={"Accept": "application/json"})
        try:
            result = self._interpret(response)
        except DeliveryError as exc:
            log.warning("aliyun sms to %s failed: %s", mask_address(envelope.address), exc.code)
            raise
        log.info("aliyun sms to %s accepted", mask_address(envelope.address))
        return result

    def _interpret(self, response: httpx.Response) -> SendResult:
        now = self._clock()
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("Code") if isinstance(body, dict) else None
        if not isinstance(code, str):
            error = error_for_status(response, now)
            raise error or TransientDeliveryError(
                "阿里云短信应答无法解析，发送结果未知", code="BAD_RESPONSE"
            )
        if code == "OK" and response.is_success:
            biz_id = body.get("BizId")
            return SendResult(provider_id=str(biz_id) if biz_id else None, detail="OK")
        hint = retry_after_seconds(response.headers.get("Retry-After"), now)
        error = classify_aliyun(code, str(body.get("Message", "")), retry_after=hint)
        status = response.status_code
        if type(error) is PermanentDeliveryError and (status == 429 or status >= 500):
            # An unknown code on a 429/5xx is the gateway's trouble, not the message's.
            error = TransientDeliveryError(str(error), code=code, retry_after=hint)
        raise error
