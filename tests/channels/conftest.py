"""SMS test fixtures: a loopback HTTP/1.1 server that re-verifies SMS signatures."""

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
from datetime import UTC, datetime
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
    """HTTP/1.1 on 127.0.0.1:0; ``fault`` (http429/http500/hang) beats the provider."""

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

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
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


class AliyunFake:
    """dysmsapi SendSms: re-verifies RPC V2 in its own code, then answers ``answer``."""

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

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.answer = "ok"
        self.accepted: list[dict[str, str]] = []
        self._nonces: set[str] = set()

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
        digest = hmac.new(
            f"{secret}&".encode(), to_sign.encode(), hashlib.sha1
        ).digest()
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
        return Reply(
            200,
            {
                "RequestId": "A0000000-0000-0000-0000-000000000000",
                **self.ANSWERS[self.answer],
            },
        )


def _tencent(body: dict[str, Any]) -> Reply:
    return Reply(
        200, {"Response": {**body, "RequestId": "a5b6d2b2-0000-4f0c-8d1e-000000000000"}}
    )


class TencentFake:
    """Tencent SendSms: re-verifies TC3 in its own code, then answers ``answer``."""

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
    ERRORS = {"request_limit": ("RequestLimitExceeded", "request limit exceeded")}

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.answer = "ok"
        self.accepted: list[tuple[dict[str, str], dict[str, Any]]] = []

    def _expected(self, request: RawRequest, secret_id: str, names: list[str]) -> str:
        secret = self.secrets[secret_id]
        timestamp = int(request.headers["x-tc-timestamp"])
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        headers = "".join(
            f"{n}:{request.headers.get(n, '').strip().lower()}\n" for n in names
        )
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
            p.strip().split("=", 1)
            for p in auth.partition(" ")[2].split(",")
            if "=" in p
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
        if not (
            signed_ok
            and hmac.compare_digest(auth, self._expected(request, secret_id, names))
        ):
            message = (
                "The provided credentials could not be validated. "
                "Please check your signature is correct."
            )
            return _tencent(
                {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": message}}
            )
        body = json.loads(request.body)
        self.accepted.append((request.headers, body))
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
        return _tencent({"SendStatusSet": [status]})


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
    def make(*, environ: dict[str, str] | None = None, **settings: Any) -> AliyunSms:
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
            client=http_client,
            environ=SMS_ENVIRON if environ is None else environ,
            clock=lambda: FIXED_NOW,
            nonce_factory=_nonces(),
        )

    return make


@pytest.fixture
def make_tencent(
    tencent_server: LoopbackServer, http_client: httpx.AsyncClient
) -> Callable[..., TencentSms]:
    def make(*, environ: dict[str, str] | None = None, **settings: Any) -> TencentSms:
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
            client=http_client,
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
    def make(*, environ: dict[str, str] | None = None, **settings: Any) -> WebhookSms:
        base: dict[str, Any] = {
            "url": webhook_server.url + "send",
            "body_template": WEBHOOK_BODY,
            "timeout": 0.5,
        }
        return WebhookSms(
            WebhookSettings(**{**base, **settings}),
            client=http_client,
            environ=SMS_ENVIRON if environ is None else environ,
            clock=lambda: FIXED_NOW,
        )

    return make
