"""Alibaba Cloud SMS: ``SendSms`` and ``QuerySendDetails`` (2017-05-25), RPC V2 HMAC-SHA1."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
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
QUERY_PAGE_SIZE = 50  # QuerySendDetails allows at most 50 records per page
QUERY_RETENTION_DAYS = 30  # QuerySendDetails serves the last 30 days only
QUERY_MAX_PAGES = 20  # per day and number: far beyond the 40 SMS/day a number may get
_CHINA = timezone(timedelta(hours=8))
# QuerySendDetails SendStatus: 1 waiting for the carrier receipt, 2 failed, 3 delivered.
_ACCEPTED_STATUSES = frozenset({1, 3})
_FAILED_STATUS = 2

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

    def _signed_query(self, action: str, api_params: Mapping[str, str]) -> str:
        """The RPC V2 query string (common parameters, ``api_params``, Signature)."""
        s = self._settings
        params = {
            "AccessKeyId": s.access_key_id,
            "Action": action,
            "Format": "JSON",
            "RegionId": s.region_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            **api_params,
        }
        signature = aliyun_rpc_signature(self._secret, "POST", params)
        return f"{aliyun_canonical_query(params)}&Signature={percent_encode(signature)}"

    def _query(self, envelope: Envelope) -> str:
        s = self._settings
        template = s.template(envelope.sms_template)
        values = ordered_params(template, envelope.sms_params, s.default_max_param_len)
        phone = mainland_e164(envelope.address)
        params = {
            "PhoneNumbers": phone.removeprefix("+86"),
            "SignName": s.sign_name,
            "TemplateCode": template.code,
            "OutId": out_id_for(envelope.key),
        }
        if template.params:
            mapping = dict(zip(template.params, values, strict=True))
            params["TemplateParam"] = json.dumps(mapping, ensure_ascii=False, separators=(",", ":"))
        return self._signed_query("SendSms", params)

    async def send(self, envelope: Envelope) -> SendResult:
        """Submit the envelope; raise a :class:`DeliveryError` unless Code is ``OK``."""
        url = f"{self._endpoint}?{self._query(envelope)}"
        response = await self._post(url, headers={"Accept": "application/json"})
        try:
            result = self._interpret(response)
        except DeliveryError as exc:
            log.warning("aliyun sms to %s failed: %s", mask_address(envelope.address), exc.code)
            raise
        log.debug("aliyun sms to %s accepted", mask_address(envelope.address))
        return result

    def _interpret(self, response: httpx.Response) -> SendResult:
        body = self._checked_body(response)
        biz_id = body.get("BizId")
        return SendResult(provider_id=str(biz_id) if biz_id else None, detail="OK")

    def _checked_body(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON body of an ``OK`` answer; otherwise the classified error is raised."""
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
            checked: dict[str, Any] = body
            return checked
        hint = retry_after_seconds(response.headers.get("Retry-After"), now)
        error = classify_aliyun(code, str(body.get("Message", "")), retry_after=hint)
        status = response.status_code
        if type(error) is PermanentDeliveryError and (status == 429 or status >= 500):
            # An unknown code on a 429/5xx is the gateway's trouble, not the message's.
            error = TransientDeliveryError(str(error), code=code, retry_after=hint)
        raise error

    async def find_accepted(self, envelope: Envelope, since: datetime) -> SendResult | None:
        """Ask ``QuerySendDetails`` whether an earlier ``SendSms`` for ``envelope`` was accepted.

        The provider files records by send date (China time) and number, so this queries
        one ``SendDate`` per day from ``since`` to today, newest first (at most the 30 days
        the provider keeps), paging ``QUERY_PAGE_SIZE`` records at a time. A record whose
        ``OutId`` is ``out_id_for(envelope.key)`` with ``SendStatus`` 1 (waiting for the
        receipt) or 3 (delivered) means accepted; ``SendStatus`` 2 (failed) does not, and
        a later accepted record still wins. Unlike Tencent's status pull, a message shows
        up here as soon as it was accepted, before any carrier receipt.

        Returns None when no accepted record exists (a resend is safe). Errors are
        classified like ``SendSms`` ones (throttling is transient, a RAM policy without
        ``dysms:QuerySendDetails`` is a :class:`ChannelConfigError`).
        """
        phone = mainland_e164(envelope.address).removeprefix("+86")
        out_id = out_id_for(envelope.key)
        today = self._clock().astimezone(_CHINA).date()
        oldest = today - timedelta(days=QUERY_RETENTION_DAYS - 1)
        first = max(since.astimezone(_CHINA).date(), oldest)
        day = today
        try:
            while day >= first:
                found = await self._find_on(day, phone, out_id)
                if found is not None:
                    log.info(
                        "aliyun sms to %s was already accepted (%s)",
                        mask_address(envelope.address),
                        day.isoformat(),
                    )
                    return found
                day -= timedelta(days=1)
        except DeliveryError as exc:
            log.warning(
                "aliyun status query for %s failed: %s", mask_address(envelope.address), exc.code
            )
            raise
        return None

    async def _find_on(self, day: date, phone: str, out_id: str) -> SendResult | None:
        failed = False
        for page in range(1, QUERY_MAX_PAGES + 1):
            params = {
                "PhoneNumber": phone,
                "SendDate": day.strftime("%Y%m%d"),
                "PageSize": str(QUERY_PAGE_SIZE),
                "CurrentPage": str(page),
            }
            url = f"{self._endpoint}?{self._signed_query('QuerySendDetails', params)}"
            response = await self._post(url, headers={"Accept": "application/json"})
            body = self._checked_body(response)
            records = _send_details(body)
            for record in records:
                if str(record.get("OutId", "")) != out_id:
                    continue
                status = _int_or_none(record.get("SendStatus"))
                if status in _ACCEPTED_STATUSES:
                    biz_id = record.get("BizId")
                    return SendResult(
                        provider_id=str(biz_id) if biz_id else out_id,
                        detail="found by QuerySendDetails",
                    )
                failed = failed or status == _FAILED_STATUS
            total = _int_or_none(body.get("TotalCount"))
            if len(records) < QUERY_PAGE_SIZE or (
                total is not None and page * QUERY_PAGE_SIZE >= total
            ):
                if failed:
                    log.info("aliyun sms %s failed earlier on %s; resending", out_id, day)
                return None
        # Never reached with real traffic (flow control caps a number at 40 SMS a day):
        # a gateway that keeps returning full pages cannot prove the message is absent.
        raise TransientDeliveryError(
            "阿里云短信发送记录过多，无法确认是否已发送", code="QUERY_INCOMPLETE"
        )


def _send_details(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``SmsSendDetailDTOs.SmsSendDetailDTO`` as a list of records (absent → empty)."""
    container = body.get("SmsSendDetailDTOs")
    records = container.get("SmsSendDetailDTO") if isinstance(container, dict) else None
    if not isinstance(records, list):
        return []
    return [r for r in records if isinstance(r, dict)]


def _int_or_none(value: Any) -> int | None:
    """An int from a JSON number or numeric string (TotalCount comes as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
