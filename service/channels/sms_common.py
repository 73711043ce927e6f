"""Shared SMS pieces: length rules, settings, parameter checks, HTTP error mapping."""

from __future__ import annotations

import functools
import math
import re
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from service.channels.base import (
    ChannelConfigError,
    ChannelName,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from service.channels.http_lean import LeanTransport

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""

USER_AGENT = f"campaign-reminders (python-httpx/{httpx.__version__})"
SINGLE_SEGMENT_CHARS = 70
MULTI_SEGMENT_CHARS = 67
MAX_SMS_CHARS = 500

_MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")
_URL_LIKE = re.compile(r"(?i)(?:[a-z][a-z0-9+.-]*://|www\.)")
_CONFIG_STATUSES = frozenset({401, 403, 404, 405, 407})


def utc_now() -> datetime:
    """The default :data:`Clock`."""
    return datetime.now(UTC)


def sms_length(text: str, signature: str) -> int:
    """Characters received: 【signature】 plus text, every character counts 1."""
    sign = signature.strip()
    if sign and not (sign.startswith("【") and sign.endswith("】")):
        sign = f"【{sign}】"
    return len(sign) + len(text)


def sms_segments(text: str, signature: str) -> int:
    """Billed segments: ≤ 70 characters is one, else ⌈n/67⌉; over 500 is refused."""
    length = sms_length(text, signature)
    if length > MAX_SMS_CHARS:
        raise ValueError(f"短信长度 {length} 字超过上限 {MAX_SMS_CHARS} 字")
    if length <= SINGLE_SEGMENT_CHARS:
        return 1
    return math.ceil(length / MULTI_SEGMENT_CHARS)


def mainland_e164(address: str) -> str:
    """Normalise a mainland mobile number to ``+86`` and 11 digits, or refuse it."""
    digits = re.sub(r"[\s-]", "", address)
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix) :]
            break
    if not _MAINLAND_MOBILE.fullmatch(digits):
        raise PermanentDeliveryError("不是有效的中国大陆手机号码", code="INVALID_NUMBER")
    return f"+86{digits}"


def read_secret(env_name: str, environ: Mapping[str, str]) -> str:
    """The secret in environment variable ``env_name``; only the name is ever shown."""
    value = environ.get(env_name, "").strip()
    if not value:
        raise ChannelConfigError(f"环境变量 {env_name} 未设置，缺少短信密钥", code="SECRET_MISSING")
    return value


@dataclass(frozen=True)
class SmsTemplate:
    """A provider-registered template: its code, ordered variable names, length limits.

    ``max_param_len`` is one limit for every variable or a per-variable mapping;
    variables it does not cover fall back to the settings' ``default_max_param_len``.
    """

    code: str
    params: tuple[str, ...] = ()
    max_param_len: int | Mapping[str, int] | None = None

    def limit_for(self, name: str, default: int) -> int:
        """The maximum length of variable ``name``."""
        if isinstance(self.max_param_len, int):
            return self.max_param_len
        if self.max_param_len is None:
            return default
        return self.max_param_len.get(name, default)


def ordered_params(
    template: SmsTemplate, params: Mapping[str, str], default_max_len: int
) -> tuple[str, ...]:
    """The values in the template's order, after the checks the providers would make."""
    missing = [name for name in template.params if name not in params]
    unknown = [name for name in params if name not in template.params]
    if missing or unknown:
        raise ChannelConfigError(
            f"短信模板 {template.code} 参数不匹配：缺少 {missing}，多余 {unknown}",
            code="PARAM_MISMATCH",
        )
    values = tuple(params[name] for name in template.params)
    for name, value in zip(template.params, values, strict=True):
        limit = template.limit_for(name, default_max_len)
        if len(value) > limit:
            raise PermanentDeliveryError(
                f"短信参数 {name} 长度 {len(value)} 超过上限 {limit}",
                code="PARAM_LENGTH_LIMIT",
            )
        # Both providers reject links and the signature brackets inside variables.
        if _URL_LIKE.search(value) or "【" in value or "】" in value:
            raise PermanentDeliveryError(
                f"短信参数 {name} 含有网址或【】", code="PARAM_NOT_ALLOWED"
            )
    return values


@dataclass(frozen=True, kw_only=True)
class SmsSettings:
    """What a signed SMS provider needs; names the secret's variable, never holds it."""

    endpoint: str
    access_key_id: str
    secret_env: str
    sign_name: str
    templates: Mapping[str, SmsTemplate] = field(default_factory=dict)
    timeout: float = 5.0
    default_max_param_len: int = 20

    def template(self, logical_name: str | None) -> SmsTemplate:
        """The registered template for a logical name."""
        if logical_name is None or logical_name not in self.templates:
            raise ChannelConfigError(
                f"未配置短信模板：{logical_name}", code="TEMPLATE_NOT_CONFIGURED"
            )
        return self.templates[logical_name]


@dataclass(frozen=True, kw_only=True)
class AliyunSettings(SmsSettings):
    """Alibaba Cloud SendSms (``access_key_id`` is the AccessKey ID)."""

    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    region_id: str = "cn-hangzhou"


@dataclass(frozen=True, kw_only=True)
class TencentSettings(SmsSettings):
    """Tencent Cloud SendSms (``access_key_id`` is the SecretId)."""

    endpoint: str = "https://sms.tencentcloudapi.com/"
    sms_sdk_app_id: str
    region: str = "ap-guangzhou"
    # Accounts opened since 2024-01-25 default to 6 characters per variable.
    default_max_param_len: int = 6


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Parse ``Retry-After`` (delta seconds or HTTP date) into seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def error_for_status(response: httpx.Response, now: datetime) -> DeliveryError | None:
    """Map an HTTP status to a delivery error; ``None`` for 2xx."""
    status = response.status_code
    if response.is_success:
        return None
    reason = f"HTTP {status}"
    if status in (408, 429) or status >= 500:
        hint = retry_after_seconds(response.headers.get("Retry-After"), now)
        return TransientDeliveryError(
            f"短信网关暂时不可用（{reason}）", code=reason, retry_after=hint
        )
    if status in _CONFIG_STATUSES or response.is_redirect:
        return ChannelConfigError(f"短信网关拒绝访问，请检查配置（{reason}）", code=reason)
    return PermanentDeliveryError(f"短信网关拒绝请求（{reason}）", code=reason)


def error_for_transport(exc: httpx.TransportError) -> DeliveryError:
    """Map an httpx transport failure (a timed-out POST may still have been sent)."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ChannelConfigError("短信网关地址无效", code="BAD_ENDPOINT")
    if isinstance(exc, httpx.TimeoutException):
        return TransientDeliveryError("短信网关超时，结果未知", code=type(exc).__name__)
    return TransientDeliveryError("无法连接短信网关", code=type(exc).__name__)


@functools.lru_cache(maxsize=64)
def _parsed_url(url: str) -> httpx.URL:
    """``httpx.URL(str)`` costs ~19 µs; the webhook and Tencent endpoints never change."""
    return httpx.URL(url)


class HttpSmsChannel:
    """Owns (or borrows) the HTTP connection pool and maps transport failures.

    Without a borrowed client, requests go straight to a
    :class:`~service.channels.http_lean.LeanTransport`: a gateway call needs none of
    ``AsyncClient``'s layers (cookies, auth flows, redirects, event hooks), which were a
    quarter of the dispatcher's CPU at ~1,000 SMS/s (bench figure 2), nor httpcore's
    general pool and h11 machinery, which cost ~0.9 ms per SMS (see that module). It
    returns fully read ``httpx.Response`` objects and raises httpx's transport errors,
    so the channels and :func:`error_for_transport` are the same either way. A proxy
    configured in the environment (``HTTPS_PROXY`` …) is honoured through a full client.
    """

    name: ChannelName = "sms"

    def __init__(self, *, client: httpx.AsyncClient | None, timeout: float, clock: Clock) -> None:
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._clock = clock
        self._owns_client = client is None
        # Keep every connection alive: with fewer keep-alive slots than the dispatcher's
        # concurrency (8), each burst closed and reopened connections.
        connections = 10
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._transport: LeanTransport | None = None
        if client is None and not urllib.request.getproxies():
            self._transport = LeanTransport(max_connections=connections)  # all kept alive
        elif client is None:
            client = httpx.AsyncClient(timeout=self._timeout, limits=limits)
        self._client = client

    async def _post(
        self, url: str, *, headers: Mapping[str, str], content: bytes = b""
    ) -> httpx.Response:
        try:
            if self._transport is None:
                assert self._client is not None
                request = self._client.build_request(
                    "POST", url, headers=dict(headers), content=content, timeout=self._timeout
                )
                return await self._client.send(request)
            request = httpx.Request(
                "POST",
                _parsed_url(url),
                headers={"User-Agent": USER_AGENT, **headers},
                content=content,
                extensions=self._extensions,
            )
            # The response comes back read and closed, with ``request`` set.
            return await self._transport.handle_async_request(request)
        except httpx.TransportError as exc:
            raise error_for_transport(exc) from exc

    async def aclose(self) -> None:
        """Close the HTTP client or connection pool if this channel created it."""
        if self._transport is not None:
            await self._transport.aclose()
        elif self._owns_client and self._client is not None:
            await self._client.aclose()
