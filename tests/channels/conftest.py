"""SMS test fixtures: a loopback HTTP/1.1 server that re-verifies SMS signatures.

The Alibaba Cloud and Tencent Cloud fakes also keep a record of every SMS they accepted
(``SmsRecord``) and answer the status queries from it: ``QuerySendDetails`` and
``PullSmsSendStatusByPhoneNumber``. ``mark`` sets a record's receipt (delivered/failed),
``seed`` adds records that never went through SendSms (other messages, for paging).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from service.channels.base import Envelope
from service.channels.sms_aliyun import AliyunSms
from service.channels.sms_common import AliyunSettings, SmsTemplate, TencentSettings
from service.channels.sms_tencent import TencentSms
from service.channels.sms_webhook import WebhookSettings, WebhookSms

FIXED_NOW = datetime(2023, 6, 16, 1, 30, tzinfo=UTC)
CHINA = timezone(timedelta(hours=8))
SIGN_NAME = "吉林省应急管理厅"
ALIYUN_KEY_ID, ALIYUN_SECRET = "LTAI-test-id", "aliyun-test-secret"
TENCENT_ID, TENCENT_KEY = "AKID-test-id", "tencent-test-key"
SMS_ENVIRON = {
    "TEST_ALIYUN_SECRET": ALIYUN_SECRET,
    "TEST_TENCENT_SECRET": TENCENT_KEY,
    "TEST_WEBHOOK_TOKEN": "webhook-token",
    "TEST_WEBHOOK_HMAC": "webhook-hmac-key",
}


@dataclass
class RawRequest:
    """One request exactly as it arrived on the socket."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


@dataclass
class Reply:
    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RawRequest], Reply]


class LoopbackServer:
    """HTTP/1.1 on 127.0.0.1:0; ``fault`` (http429/http500/hang/late) beats the provider.

    ``hang`` holds the request without handing it to the provider; ``late`` lets the
    provider handle (and record) it, then holds the reply until the server closes: the
    client times out on a request the provider did accept.
    """

    def __init__(self, provider: Handler) -> None:
        self.provider = provider
        self.fault: str | None = None
        self.requests: list[RawRequest] = []
        self.hung = asyncio.Event()
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""
        self.connections = 0  # TCP connections accepted so far

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"

    async def close(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                reply = await self._answer(request)
                writer.write(_encode(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: RawRequest) -> Reply:
        if self.fault == "late":
            reply = self.provider(request)
            self.hung.set()
            await self._release.wait()
            return reply
        if self.fault == "hang":
            self.hung.set()
            await self._release.wait()
        if self.fault == "http429":
            return Reply(429, "Too Many Requests", {"Retry-After": "7"})
        if self.fault == "http500":
            return Reply(500, "Internal Server Error")
        return self.provider(request)


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return RawRequest(method, target, headers, body)


def _encode(reply: Reply) -> bytes:
    is_text = isinstance(reply.payload, str)
    body = (reply.payload if is_text else json.dumps(reply.payload)).encode()
    kind = "text/plain" if is_text else "application/json;charset=utf-8"
    headers = {"Content-Type": kind, "Content-Length": str(len(body)), **reply.headers}
    lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _aliyun_error(status: int, code: str, message: str) -> Reply:
    payload = {
        "RequestId": "F0000000-0000-0000-0000-000000000000",
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi",
    }
    return Reply(status, payload)


@dataclass
class SmsRecord:
    """One SMS a fake provider accepted; ``status`` is its receipt so far."""

    phone: str  # 11 digits, no country code
    out_id: str  # Aliyun OutId / Tencent SessionContext
    sent_at: datetime  # from the request's own timestamp (the channel's clock)
    provider_id: str  # Aliyun BizId / Tencent SerialNo
    template_code: str = ""
    content: str = ""
    status: str = "waiting"  # waiting (no receipt yet) | delivered | failed
    received_at: datetime | None = None


class _Records:
    """The accepted-SMS store shared by both fakes."""

    def __init__(self) -> None:
        self.records: list[SmsRecord] = []

    def seed(self, *records: SmsRecord) -> None:
        """Add records as if other SMS had been accepted earlier."""
        self.records.extend(records)

    def mark(self, out_id: str, status: str, *, at: datetime | None = None) -> None:
        """Give every record of ``out_id`` a receipt: ``delivered`` or ``failed``."""
        assert status in ("waiting", "delivered", "failed")
        matched = [r for r in self.records if r.out_id == out_id]
        assert matched, f"no record for {out_id}"
        for record in matched:
            record.status = status
            record.received_at = None if status == "waiting" else (at or record.sent_at)


def _national(phone: str) -> str:
    return phone.removeprefix("+86").removeprefix("0086")


_ALIYUN_SEND_STATUS = {"waiting": 1, "failed": 2, "delivered": 3}
_ALIYUN_ERR_CODE = {"waiting": "", "failed": "MK:0001", "delivered": "DELIVERED"}


class AliyunFake(_Records):
    """dysmsapi SendSms and QuerySendDetails: re-verifies RPC V2 in its own code.

    SendSms answers ``answer`` and records the SMS when that answer is ``ok``;
    QuerySendDetails answers ``query_answer`` (``ok``: the matching records).
    """

    ANSWERS = {
        "ok": {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0"},
        "throttle": {
            "Code": "isv.BUSINESS_LIMIT_CONTROL",
            "Message": "触发天级流控Permits:10",
        },
        "invalid_number": {
            "Code": "isv.MOBILE_NUMBER_ILLEGAL",
            "Message": "非法手机号",
        },
        "template_illegal": {
            "Code": "isv.SMS_TEMPLATE_ILLEGAL",
            "Message": "模板不合法",
        },
    }
    QUERY_ERRORS = {
        "throttle": (400, "Throttling.User", "Request was denied due to user flow control."),
        "system_error": (200, "isp.SYSTEM_ERROR", "系统错误"),
        "ram_deny": (200, "isp.RAM_PERMISSION_DENY", "RAM权限DENY"),
    }

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        self.secrets = secrets
        self.answer = "ok"
        self.query_answer = "ok"
        self.accepted: list[dict[str, str]] = []  # every request whose signature verified
        self._nonces: set[str] = set()

    def sends(self, out_id: str | None = None) -> list[dict[str, str]]:
        """The verified SendSms requests (for one OutId)."""
        return [
            p
            for p in self.accepted
            if p["Action"] == "SendSms" and out_id in (None, p.get("OutId"))
        ]

    def queries(self) -> list[dict[str, str]]:
        """The verified QuerySendDetails requests."""
        return [p for p in self.accepted if p["Action"] == "QuerySendDetails"]

    def __call__(self, request: RawRequest) -> Reply:
        params = request.query
        signature = params.pop("Signature", "")
        secret = self.secrets.get(params.get("AccessKeyId", ""))
        if secret is None:
            return _aliyun_error(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )

        def enc(value: str) -> str:
            return quote(value, safe="~")

        query = "&".join(f"{enc(k)}={enc(params[k])}" for k in sorted(params))
        to_sign = f"{request.method}&%2F&{enc(query)}"
        digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
        if not hmac.compare_digest(signature, base64.b64encode(digest).decode()):
            message = (
                "Specified signature does not match our calculation. "
                f"server string to sign is:{to_sign}"
            )
            return _aliyun_error(400, "SignatureDoesNotMatch", message)
        if params["SignatureNonce"] in self._nonces:
            return _aliyun_error(
                400, "SignatureNonceUsed", "Specified signature nonce was used already."
            )
        self._nonces.add(params["SignatureNonce"])
        self.accepted.append(params)
        if params.get("Action") == "QuerySendDetails":
            return self._query_send_details(params)
        if params.get("Action") != "SendSms":
            return _aliyun_error(404, "InvalidAction.NotFound", "Specified api is not found.")
        answer = self.ANSWERS[self.answer]
        if self.answer == "ok":
            sent_at = datetime.strptime(params["Timestamp"] + "+0000", "%Y-%m-%dT%H:%M:%SZ%z")
            self.records.append(
                SmsRecord(
                    phone=_national(params["PhoneNumbers"]),
                    out_id=params.get("OutId", ""),
                    sent_at=sent_at,
                    provider_id=answer["BizId"],
                    template_code=params["TemplateCode"],
                    content=params.get("TemplateParam", ""),
                )
            )
        return Reply(200, {"RequestId": "A0000000-0000-0000-0000-000000000000", **answer})

    def _query_send_details(self, params: dict[str, str]) -> Reply:
        if self.query_answer in self.QUERY_ERRORS:
            return _aliyun_error(*self.QUERY_ERRORS[self.query_answer])
        send_date = params.get("SendDate", "")
        try:
            day = datetime.strptime(send_date + "+0800", "%Y%m%d%z").date()
            size, page = int(params["PageSize"]), int(params["CurrentPage"])
            phone = _national(params["PhoneNumber"])
        except (KeyError, ValueError):
            return _aliyun_error(200, "isv.INVALID_PARAMETERS", "参数异常")
        if not (1 <= size <= 50 and page >= 1 and len(send_date) == 8):
            return _aliyun_error(200, "isv.INVALID_PARAMETERS", "参数异常")
        matching = sorted(
            (
                r
                for r in self.records
                if r.phone == phone
                and r.sent_at.astimezone(CHINA).date() == day
                and params.get("BizId") in (None, r.provider_id)
            ),
            key=lambda r: r.sent_at,
            reverse=True,
        )

        def china(moment: datetime | None) -> str:
            return "" if moment is None else moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")

        details = [
            {
                "PhoneNum": r.phone,
                "SendStatus": _ALIYUN_SEND_STATUS[r.status],
                "ErrCode": _ALIYUN_ERR_CODE[r.status],
                "TemplateCode": r.template_code,
                "Content": r.content,
                "SendDate": china(r.sent_at),
                "ReceiveDate": china(r.received_at),
                "OutId": r.out_id,
            }
            for r in matching[(page - 1) * size : page * size]
        ]
        return Reply(
            200,
            {
                "RequestId": "B0000000-0000-0000-0000-000000000000",
                "Code": "OK",
                "Message": "OK",
                "TotalCount": str(len(matching)),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": details},
            },
        )


def _tencent(body: dict[str, Any]) -> Reply:
    return Reply(200, {"Response": {**body, "RequestId": "a5b6d2b2-0000-4f0c-8d1e-000000000000"}})


class TencentFake(_Records):
    """Tencent SendSms and PullSmsSendStatusByPhoneNumber: re-verifies TC3 in its own code.

    SendSms answers ``answer`` and records the SMS when its status is Ok. The status pull
    answers ``query_answer`` (``ok``: the records with a receipt, received within
    [BeginTime, EndTime], oldest first; ``Offset`` is ignored, as documented "fixed at 0").
    """

    STATUSES = {
        "ok": ("Ok", "send success"),
        "throttle": (
            "LimitExceeded.PhoneNumberDailyLimit",
            "the number of sms messages sent from a single mobile number every day "
            "exceeds the upper limit",
        ),
        "invalid_number": (
            "InvalidParameterValue.IncorrectPhoneNumber",
            "incorrect phone number",
        ),
    }
    ERRORS = {
        "request_limit": ("RequestLimitExceeded", "request limit exceeded"),
        "unauthorized": (
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "SmsSdkAppId verify fail",
        ),
    }

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        self.secrets = secrets
        self.answer = "ok"
        self.query_answer = "ok"
        self.accepted: list[tuple[dict[str, str], dict[str, Any]]] = []

    def _expected(self, request: RawRequest, secret_id: str, names: list[str]) -> str:
        secret = self.secrets[secret_id]
        timestamp = int(request.headers["x-tc-timestamp"])
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        headers = "".join(f"{n}:{request.headers.get(n, '').strip().lower()}\n" for n in names)
        url = urlsplit(request.target)
        payload_hash = hashlib.sha256(request.body).hexdigest()
        canonical = "\n".join(
            [
                request.method,
                url.path,
                url.query,
                headers,
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{date}/sms/tc3_request"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{digest}"
        key = f"TC3{secret}".encode()
        for part in (date, "sms", "tc3_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return (
            f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )

    def __call__(self, request: RawRequest) -> Reply:
        auth = request.headers.get("authorization", "")
        fields = dict(
            p.strip().split("=", 1) for p in auth.partition(" ")[2].split(",") if "=" in p
        )
        secret_id = fields.get("Credential", "").split("/")[0]
        names = fields.get("SignedHeaders", "").split(";")
        if secret_id not in self.secrets:
            return _tencent(
                {
                    "Error": {
                        "Code": "AuthFailure.SecretIdNotFound",
                        "Message": "The SecretId is not found.",
                    }
                }
            )
        signed_ok = {"content-type", "host"} <= set(names)
        if not (signed_ok and hmac.compare_digest(auth, self._expected(request, secret_id, names))):
            message = (
                "The provided credentials could not be validated. "
                "Please check your signature is correct."
            )
            return _tencent({"Error": {"Code": "AuthFailure.SignatureFailure", "Message": message}})
        body = json.loads(request.body)
        self.accepted.append((request.headers, body))
        action = request.headers.get("x-tc-action", "")
        if action == "PullSmsSendStatusByPhoneNumber":
            return self._pull_send_status(request, body)
        if action != "SendSms":
            return _tencent(
                {"Error": {"Code": "InvalidAction", "Message": f"unknown action {action}"}}
            )
        if self.answer in self.ERRORS:
            code, message = self.ERRORS[self.answer]
            return _tencent({"Error": {"Code": code, "Message": message}})
        code, message = self.STATUSES[self.answer]
        status = {
            "SerialNo": "2640:542926165416526640162009090" if code == "Ok" else "",
            "PhoneNumber": body["PhoneNumberSet"][0],
            "Fee": 1 if code == "Ok" else 0,
            "SessionContext": body.get("SessionContext", ""),
            "Code": code,
            "Message": message,
            "IsoCode": "CN",
        }
        if code == "Ok":
            timestamp = int(request.headers["x-tc-timestamp"])
            self.records.append(
                SmsRecord(
                    phone=_national(body["PhoneNumberSet"][0]),
                    out_id=body.get("SessionContext", ""),
                    sent_at=datetime.fromtimestamp(timestamp, UTC),
                    provider_id=status["SerialNo"],
                    template_code=body["TemplateId"],
                    content=json.dumps(body.get("TemplateParamSet", []), ensure_ascii=False),
                )
            )
        return _tencent({"SendStatusSet": [status]})

    def sends(self, context: str | None = None) -> list[dict[str, Any]]:
        """The verified SendSms bodies (for one SessionContext)."""
        return [
            b
            for h, b in self.accepted
            if h.get("x-tc-action") == "SendSms" and context in (None, b.get("SessionContext"))
        ]

    def pulls(self) -> list[dict[str, Any]]:
        """The verified PullSmsSendStatusByPhoneNumber bodies."""
        return [
            b for h, b in self.accepted if h.get("x-tc-action") == "PullSmsSendStatusByPhoneNumber"
        ]

    def _pull_send_status(self, request: RawRequest, body: dict[str, Any]) -> Reply:
        if self.query_answer in self.ERRORS:
            code, message = self.ERRORS[self.query_answer]
            return _tencent({"Error": {"Code": code, "Message": message}})
        now = int(request.headers["x-tc-timestamp"])
        begin, end, limit = body.get("BeginTime"), body.get("EndTime", now), body.get("Limit")
        valid = (
            all(isinstance(v, int) for v in (begin, end, limit, body.get("Offset")))
            and isinstance(body.get("PhoneNumber"), str)
            and body["PhoneNumber"].startswith("+")
            and isinstance(body.get("SmsSdkAppId"), str)
        )
        if not valid or not (1 <= limit <= 100) or begin < now - 7 * 86400:
            return _tencent(
                {"Error": {"Code": "InvalidParameterValue", "Message": "invalid parameter"}}
            )
        phone = _national(body["PhoneNumber"])
        seen = sorted(
            (
                r
                for r in self.records
                if r.phone == phone
                and r.received_at is not None
                and begin <= int(r.received_at.timestamp()) <= end
            ),
            key=lambda r: r.received_at or r.sent_at,
        )
        rows = [
            {
                "UserReceiveTime": int(r.received_at.timestamp()) if r.received_at else None,
                "CountryCode": "86",
                "SubscriberNumber": r.phone,
                "PhoneNumber": f"+86{r.phone}",
                "SerialNo": r.provider_id,
                "ReportStatus": "SUCCESS" if r.status == "delivered" else "FAIL",
                "Description": "DELIVRD" if r.status == "delivered" else "MK:0001",
                "SessionContext": r.out_id,
            }
            for r in seen[:limit]
        ]
        return _tencent({"PullSmsSendStatusSet": rows})


class WebhookFake:
    """A generic gateway that records requests and answers ``reply``."""

    def __init__(self) -> None:
        self.reply = Reply(200, {"data": {"id": "msg-42"}})

    def __call__(self, request: RawRequest) -> Reply:
        return self.reply


@asynccontextmanager
async def _running(provider: Handler) -> AsyncIterator[LoopbackServer]:
    server = LoopbackServer(provider)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def aliyun_server() -> AsyncIterator[LoopbackServer]:
    async with _running(AliyunFake({ALIYUN_KEY_ID: ALIYUN_SECRET})) as server:
        yield server


@pytest.fixture
async def tencent_server() -> AsyncIterator[LoopbackServer]:
    async with _running(TencentFake({TENCENT_ID: TENCENT_KEY})) as server:
        yield server


@pytest.fixture
async def webhook_server() -> AsyncIterator[LoopbackServer]:
    async with _running(WebhookFake()) as server:
        yield server


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy variable on the host must not divert loopback traffic.
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def reply_factory() -> type[Reply]:
    return Reply


@pytest.fixture
def sms_environ() -> dict[str, str]:
    return dict(SMS_ENVIRON)


@pytest.fixture
def make_envelope() -> Callable[..., Envelope]:
    def make(**overrides: Any) -> Envelope:
        values: dict[str, Any] = {
            "key": "jilin-2023/weekly-stats/2023-W24/unit-07/remind-1/liaison-3/sms",
            "channel": "sms",
            "recipient_name": "张三",
            "address": "+8618644975330",
            "subject": "周报提醒",
            "text": "【吉林省应急管理厅】请于6月16日前报送安全生产月周报。",
            "sms_template": "reminder",
            "sms_params": {"unit": "应急管理厅", "date": "6月16日"},
        }
        return Envelope(**{**values, **overrides})

    return make


def _templates(code: str) -> dict[str, SmsTemplate]:
    return {"reminder": SmsTemplate(code=code, params=("unit", "date"))}


def _nonces() -> Callable[[], str]:
    counter: Iterator[int] = itertools.count(1)
    return lambda: f"nonce-{next(counter):04d}"


@pytest.fixture
def make_aliyun(
    aliyun_server: LoopbackServer, http_client: httpx.AsyncClient
) -> Callable[..., AliyunSms]:
    def make(
        *, environ: dict[str, str] | None = None, own_pool: bool = False, **settings: Any
    ) -> AliyunSms:
        base: dict[str, Any] = {
            "endpoint": aliyun_server.url,
            "access_key_id": ALIYUN_KEY_ID,
            "secret_env": "TEST_ALIYUN_SECRET",
            "sign_name": SIGN_NAME,
            "templates": _templates("SMS_465324001"),
            "timeout": 0.5,
        }
        return AliyunSms(
            AliyunSettings(**{**base, **settings}),
            client=None if own_pool else http_client,
            environ=SMS_ENVIRON if environ is None else environ,
            clock=lambda: FIXED_NOW,
            nonce_factory=_nonces(),
        )

    return make


@pytest.fixture
def make_tencent(
    tencent_server: LoopbackServer, http_client: httpx.AsyncClient
) -> Callable[..., TencentSms]:
    def make(
        *, environ: dict[str, str] | None = None, own_pool: bool = False, **settings: Any
    ) -> TencentSms:
        base: dict[str, Any] = {
            "endpoint": tencent_server.url,
            "access_key_id": TENCENT_ID,
            "secret_env": "TEST_TENCENT_SECRET",
            "sign_name": SIGN_NAME,
            "sms_sdk_app_id": "1400006666",
            "templates": _templates("1110"),
            "timeout": 0.5,
        }
        return TencentSms(
            TencentSettings(**{**base, **settings}),
            client=None if own_pool else http_client,
            environ=SMS_ENVIRON if environ is None else environ,
            clock=lambda: FIXED_NOW,
        )

    return make


WEBHOOK_BODY = (
    '{"key": {{ key|tojson }}, "to": {{ to|tojson }}, "name": {{ name|tojson }}, '
    '"template": {{ template|tojson }}, "params": {{ params|tojson }}, '
    '"text": {{ text|tojson }}}'
)


@pytest.fixture
def make_webhook(
    webhook_server: LoopbackServer, http_client: httpx.AsyncClient
) -> Callable[..., WebhookSms]:
    def make(
        *, environ: dict[str, str] | None = None, own_pool: bool = False, **settings: Any
    ) -> WebhookSms:
        base: dict[str, Any] = {
            "url": webhook_server.url + "send",
            "body_template": WEBHOOK_BODY,
            "timeout": 0.5,
        }
        return WebhookSms(
            WebhookSettings(**{**base, **settings}),
            client=None if own_pool else http_client,
            environ=SMS_ENVIRON if environ is None else environ,
            clock=lambda: FIXED_NOW,
        )

    return make
