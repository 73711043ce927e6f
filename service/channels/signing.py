"""Request signing for Alibaba Cloud (RPC V2, ACS3 V3) and Tencent Cloud (TC3) APIs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "aliyun_canonical_query",
    "aliyun_rpc_signature",
    "aliyun_rpc_string_to_sign",
    "aliyun_v3_authorization",
    "aliyun_v3_canonical_request",
    "aliyun_v3_signature",
    "aliyun_v3_string_to_sign",
    "percent_encode",
    "sha256_hex",
    "tc3_authorization",
    "tc3_canonical_request",
    "tc3_date",
    "tc3_derived_keys",
    "tc3_signature",
    "tc3_string_to_sign",
]

TC3_ALGORITHM = "TC3-HMAC-SHA256"
ACS3_ALGORITHM = "ACS3-HMAC-SHA256"


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba Cloud wants it: UTF-8, space → %20, ``*`` → %2A."""
    return quote(value, safe="-_.~", encoding="utf-8")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def aliyun_canonical_query(params: Mapping[str, str]) -> str:
    """Sorted, percent-encoded ``k=v&…``; a ``Signature`` entry is never signed."""
    # The doc sorts UTF-8 bytes; code point order on str is the same order.
    items = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in items)


def aliyun_rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&<encoded canonical query>`` (RPC V2)."""
    query = aliyun_canonical_query(params)
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(query)}"


def aliyun_rpc_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64 HMAC-SHA1 keyed with ``secret + "&"`` (not yet URL-encoded)."""
    string_to_sign = aliyun_rpc_string_to_sign(method, params)
    key = f"{secret}&".encode()
    digest = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def aliyun_v3_canonical_request(
    method: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
    *,
    uri: str = "/",
) -> tuple[str, str]:
    """Return ``(CanonicalRequest, SignedHeaders)`` over host, content-type, x-acs-*."""
    signed = {
        name.lower(): value.strip()
        for name, value in headers.items()
        if name.lower() in ("host", "content-type") or name.lower().startswith("x-acs-")
    }
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_query = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(query.items())
    )
    parts = [method.upper(), uri, canonical_query, canonical_headers, signed_headers]
    return "\n".join([*parts, payload_hash]), signed_headers


def aliyun_v3_string_to_sign(canonical_request: str) -> str:
    """``ACS3-HMAC-SHA256\\n<hex sha256(canonical request)>``."""
    return f"{ACS3_ALGORITHM}\n{sha256_hex(canonical_request.encode('utf-8'))}"


def aliyun_v3_signature(secret: str, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 keyed with the raw secret (no ``&`` suffix, unlike V2)."""
    return _hmac_sha256(secret.encode("utf-8"), string_to_sign).hex()


def aliyun_v3_authorization(access_key_id: str, signed_headers: str, signature: str) -> str:
    """The V3 ``Authorization`` header (comma separated, no spaces)."""
    return (
        f"{ACS3_ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


def tc3_date(timestamp: int) -> str:
    """The credential scope date: the **UTC** date of ``X-TC-Timestamp``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def tc3_canonical_request(
    method: str,
    headers: Mapping[str, str],
    payload: bytes,
    *,
    uri: str = "/",
    query: str = "",
) -> tuple[str, str]:
    """Return ``(CanonicalRequest, SignedHeaders)``; every given header is signed."""
    # TC3 lower-cases header values too, so "SendSms" is signed as "sendsms".
    signed = {name.lower(): value.strip().lower() for name, value in headers.items()}
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_headers = ";".join(names)
    parts = [method.upper(), uri, query, canonical_headers, signed_headers]
    return "\n".join([*parts, sha256_hex(payload)]), signed_headers


def tc3_string_to_sign(timestamp: int, service: str, canonical_request: str) -> str:
    """``TC3-HMAC-SHA256\\n<ts>\\n<date>/<service>/tc3_request\\n<hex sha256>``."""
    scope = f"{tc3_date(timestamp)}/{service}/tc3_request"
    digest = sha256_hex(canonical_request.encode("utf-8"))
    return f"{TC3_ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def tc3_derived_keys(secret_key: str, date: str, service: str) -> tuple[bytes, bytes, bytes]:
    """``(SecretDate, SecretService, SecretSigning)``."""
    secret_date = _hmac_sha256(f"TC3{secret_key}".encode(), date)
    secret_service = _hmac_sha256(secret_date, service)
    return secret_date, secret_service, _hmac_sha256(secret_service, "tc3_request")


def tc3_signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign under the derived signing key."""
    signing_key = tc3_derived_keys(secret_key, date, service)[2]
    return _hmac_sha256(signing_key, string_to_sign).hex()


def tc3_authorization(
    secret_id: str, date: str, service: str, signed_headers: str, signature: str
) -> str:
    """The TC3 ``Authorization`` header (comma **and space** separated)."""
    return (
        f"{TC3_ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
