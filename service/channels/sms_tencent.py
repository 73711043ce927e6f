"""Tencent Cloud SMS: ``SendSms`` and ``PullSmsSendStatusByPhoneNumber`` (2021-01-11), TC3."""

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
PULL_LIMIT = 100  # PullSmsSendStatusByPhoneNumber returns at most 100 records per call
PULL_MAX_AGE = timedelta(days=7)  # "最大可拉取当前时期前7天的数据"
PULL_MAX_CALLS = 32  # window splits per lookup; real traffic needs one call

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

    def _headers(self, payload: bytes, action: str = "SendSms") -> dict[str, str]:
        timestamp = int(self._clock().timestamp())
        signed = {
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": action,
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
        log.debug("tencent sms to %s accepted", mask_address(envelope.address))
        return result

    def _response_body(self, response: httpx.Response) -> dict[str, Any] | None:
        """``Response`` of the JSON answer; raises for a ``Response.Error``."""
        now = self._clock()
        data: Any
        try:
            data = response.json()
        except ValueError:
            data = None
        body = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(body, dict):
            return None
        error = body.get("Error")
        if isinstance(error, dict):
            code, message = (
                str(error.get("Code", "")),
                str(error.get("Message", "")),
            )
            raise classify_tencent(code, message, now=now)
        return body

    def _interpret(self, response: httpx.Response) -> SendResult:
        now = self._clock()
        body = self._response_body(response)
        if body is not None:
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

    async def find_accepted(self, envelope: Envelope, since: datetime) -> SendResult | None:
        """Ask ``PullSmsSendStatusByPhoneNumber`` whether an earlier send was accepted.

        Pulls the number's delivery receipts from ``since`` (clamped to the 7 days the API
        serves) to now and looks for ``SessionContext == out_id_for(envelope.key)``: a
        receipt other than ``FAIL`` means accepted (``provider_id`` is its ``SerialNo``);
        only ``FAIL`` receipts give None. ``Offset`` is documented as fixed at 0, so a
        full page of ``PULL_LIMIT`` records is not paged by offset: its time window is
        split in two and each half pulled again, newest first.

        Residual ambiguity: the status pull only sees messages that already have a
        carrier receipt. A message Tencent accepted whose receipt has not arrived yet
        (usually seconds, sometimes minutes to hours when the handset is off) is
        invisible, and this returns None: the caller resends with the same
        ``SessionContext``, and the recipient may get the SMS twice. The dispatcher's
        retry backoff (a minute or more) keeps that window small but not closed.
        """
        phone = mainland_e164(envelope.address)
        context = out_id_for(envelope.key)
        now = self._clock()
        end = int(now.timestamp())
        # A minute inside the 7-day limit so the request cannot be refused for it.
        begin = max(int(since.timestamp()), int((now - PULL_MAX_AGE).timestamp()) + 60)
        windows = [(begin, end)] if begin <= end else []
        failed = False
        calls = 0
        try:
            while windows:
                lo, hi = windows.pop()
                records = await self._pull(phone, lo, hi)
                calls += 1
                for record in records:
                    if str(record.get("SessionContext", "")) != context:
                        continue
                    if str(record.get("ReportStatus", "")).upper() != "FAIL":
                        serial = record.get("SerialNo")
                        log.info(
                            "tencent sms to %s was already accepted",
                            mask_address(envelope.address),
                        )
                        return SendResult(
                            provider_id=str(serial) if serial else None,
                            detail="found by PullSmsSendStatusByPhoneNumber",
                        )
                    failed = True
                if len(records) < PULL_LIMIT:
                    continue
                halves = _halves(lo, hi)
                if not halves or calls + len(windows) + len(halves) > PULL_MAX_CALLS:
                    raise TransientDeliveryError(
                        "腾讯云短信状态记录过多，无法确认是否已发送", code="QUERY_INCOMPLETE"
                    )
                windows.extend(halves)  # the newer half is pulled first
        except DeliveryError as exc:
            log.warning(
                "tencent status pull for %s failed: %s", mask_address(envelope.address), exc.code
            )
            raise
        if failed:
            log.info("tencent sms %s failed earlier; resending", context)
        return None

    async def _pull(self, phone: str, begin: int, end: int) -> list[dict[str, Any]]:
        body = {
            "BeginTime": begin,
            "EndTime": end,
            "Offset": 0,
            "Limit": PULL_LIMIT,
            "PhoneNumber": phone,
            "SmsSdkAppId": self._settings.sms_sdk_app_id,
        }
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers(payload, "PullSmsSendStatusByPhoneNumber")
        response = await self._post(self._endpoint, headers=headers, content=payload)
        answer = self._response_body(response)
        if answer is None or not response.is_success:
            raise error_for_status(response, self._clock()) or TransientDeliveryError(
                "腾讯云短信状态应答无法解析", code="BAD_RESPONSE"
            )
        records = answer.get("PullSmsSendStatusSet")
        if not isinstance(records, list):
            return []  # no receipts in the window (the field may be null)
        return [r for r in records if isinstance(r, dict)]


def _halves(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi]`` in two overlapping halves (older first); [] when it cannot shrink.

    The halves share their middle second: whether the API's bounds are inclusive is not
    documented, and a record seen twice is harmless.
    """
    if hi - lo >= 2:
        mid = (lo + hi) // 2
        return [(lo, mid), (mid, hi)]
    if hi - lo == 1:
        return [(lo, lo), (hi, hi)]
    return []
