"""Shared SMS helpers: segments, numbers, parameters, secrets, HTTP error mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.channels.base import (
    ChannelConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from service.channels.sms_common import (
    SmsTemplate,
    TencentSettings,
    error_for_status,
    error_for_transport,
    mainland_e164,
    ordered_params,
    read_secret,
    retry_after_seconds,
    sms_length,
    sms_segments,
)

SIGN = "吉林省应急管理厅"
NOW = datetime(2023, 6, 16, 1, 30, tzinfo=UTC)
TEMPLATE = SmsTemplate(code="SMS_1", params=("unit", "date"))


def _status(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, headers=headers, request=httpx.Request("POST", "http://x/"))


def test_signature_counts_with_its_brackets() -> None:
    """【吉林省应急管理厅】 counts 10 characters, brackets given or not."""
    assert (sms_length("", SIGN), sms_length("", f"【{SIGN}】")) == (10, 10)


@pytest.mark.parametrize(("total", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (160, 3)])
def test_segments_include_the_signature(total: int, segments: int) -> None:
    """Text plus the 10-character signature bills ≤70 → 1, else ⌈n/67⌉."""
    assert sms_segments("字" * (total - 10), SIGN) == segments


def test_five_hundred_characters_are_eight_segments() -> None:
    """The 500-character ceiling itself is allowed and bills 8 segments."""
    assert sms_segments("a" * 490, SIGN) == 8


def test_over_five_hundred_characters_is_refused() -> None:
    """501 characters including the signature is rejected."""
    with pytest.raises(ValueError, match="500"):
        sms_segments("a" * 491, SIGN)


@given(st.integers(min_value=71, max_value=500))
def test_multi_segment_count_is_the_smallest_that_fits(total: int) -> None:
    """Above 70 characters, segments hold 67 each and none is wasted."""
    segments = sms_segments("a" * (total - 10), SIGN)
    assert (segments - 1) * 67 < total <= segments * 67


@pytest.mark.parametrize(
    "raw",
    [
        "+8618644975330",
        "18644975330",
        "008618644975330",
        "8618644975330",
        "186 4497-5330",
    ],
)
def test_mainland_numbers_normalise_to_e164(raw: str) -> None:
    """Common spellings of a mainland mobile become +86 and 11 digits."""
    assert mainland_e164(raw) == "+8618644975330"


@pytest.mark.parametrize("raw", ["+8643188906114", "1864497533", "+14155550100", "12345678901"])
def test_non_mobile_numbers_are_refused(raw: str) -> None:
    """Landlines, short, foreign and non-mobile numbers are permanent errors."""
    with pytest.raises(PermanentDeliveryError):
        mainland_e164(raw)


def test_params_come_out_in_template_order() -> None:
    """Values follow the template's order, not the mapping's."""
    assert ordered_params(TEMPLATE, {"date": "6月16日", "unit": "应急厅"}, 20) == (
        "应急厅",
        "6月16日",
    )


def test_missing_param_is_a_config_error() -> None:
    """A variable the template needs but the envelope lacks is a config error."""
    with pytest.raises(ChannelConfigError):
        ordered_params(TEMPLATE, {"unit": "应急厅"}, 20)


def test_unknown_param_is_a_config_error() -> None:
    """A variable the template does not declare is a config error."""
    with pytest.raises(ChannelConfigError):
        ordered_params(TEMPLATE, {"unit": "a", "date": "b", "extra": "c"}, 20)


def test_default_length_limit_applies() -> None:
    """Without a template limit, the settings' default limit is enforced."""
    with pytest.raises(PermanentDeliveryError, match="PARAM|长度"):
        ordered_params(TEMPLATE, {"unit": "一二三四五六七", "date": "b"}, 6)


def test_per_variable_limit_overrides_the_default() -> None:
    """A per-variable limit in the template beats the default."""
    template = SmsTemplate(code="SMS_1", params=("unit", "date"), max_param_len={"unit": 12})
    assert (
        ordered_params(template, {"unit": "一二三四五六七", "date": "b"}, 6)[0] == "一二三四五六七"
    )


@pytest.mark.parametrize("value", ["http://x.cn", "www.example.cn", "【签名】"])
def test_urls_and_brackets_in_params_are_refused(value: str) -> None:
    """Links and signature brackets inside variables are refused as permanent."""
    with pytest.raises(PermanentDeliveryError) as caught:
        ordered_params(TEMPLATE, {"unit": value, "date": "b"}, 50)
    assert caught.value.code == "PARAM_NOT_ALLOWED"


def test_tencent_settings_default_to_six_characters() -> None:
    """Tencent's default per-variable limit is the 6 characters of new accounts."""
    settings = TencentSettings(access_key_id="i", secret_env="S", sign_name="s", sms_sdk_app_id="1")
    assert settings.default_max_param_len == 6


def test_unknown_template_name_is_a_config_error() -> None:
    """Asking settings for an unmapped logical template is a config error."""
    settings = TencentSettings(access_key_id="i", secret_env="S", sign_name="s", sms_sdk_app_id="1")
    with pytest.raises(ChannelConfigError):
        settings.template("reminder")


def test_missing_secret_names_the_variable_only() -> None:
    """The error names the environment variable; an empty value counts as missing."""
    with pytest.raises(ChannelConfigError, match="SMS_SECRET"):
        read_secret("SMS_SECRET", {"SMS_SECRET": "  "})


def test_retry_after_accepts_an_http_date() -> None:
    """An HTTP-date Retry-After becomes seconds from now."""
    assert retry_after_seconds("Fri, 16 Jun 2023 01:31:00 GMT", NOW) == 60.0


def test_status_429_is_transient_with_hint() -> None:
    """429 is transient and keeps the Retry-After seconds."""
    error = error_for_status(_status(429, **{"Retry-After": "12"}), NOW)
    assert isinstance(error, TransientDeliveryError) and error.retry_after == 12.0


def test_status_503_is_transient() -> None:
    """5xx is transient."""
    assert isinstance(error_for_status(_status(503), NOW), TransientDeliveryError)


def test_status_400_is_permanent() -> None:
    """A plain 4xx is permanent but not a config error."""
    error = error_for_status(_status(400), NOW)
    assert type(error) is PermanentDeliveryError


def test_status_403_is_a_config_error() -> None:
    """401/403 point at credentials: config error."""
    assert isinstance(error_for_status(_status(403), NOW), ChannelConfigError)


def test_status_200_is_no_error() -> None:
    """2xx maps to no error."""
    assert error_for_status(_status(200), NOW) is None


def test_read_timeout_is_transient() -> None:
    """A read timeout is transient (the send may or may not have happened)."""
    error = error_for_transport(httpx.ReadTimeout("slow"))
    assert isinstance(error, TransientDeliveryError) and error.code == "ReadTimeout"


def test_unsupported_protocol_is_a_config_error() -> None:
    """A malformed endpoint scheme is a config error, not worth retrying."""
    assert isinstance(error_for_transport(httpx.UnsupportedProtocol("ftp")), ChannelConfigError)
