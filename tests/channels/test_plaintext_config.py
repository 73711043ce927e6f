"""Issue 8.11: credentials and personal data never travel in clear text by accident.

The channels file is parsed by ``load_channels_config`` (the daemon and ``validate`` both
go through it): SMTP ``security: none`` with a password, and ``http://`` SMS endpoints,
are refused unless ``allow_plaintext: true`` and the peer is a loopback test server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.channels.registry import ChannelsConfig, load_channels_config
from service.errors import ConfigError

SMTP = (
    "email:\n  backend: smtp\n  host: {host}\n  port: 25\n  security: none\n"
    "  from_addr: noreply@example.org\n  username: robot\n  password_env: SMTP_PASSWORD\n"
)
WEBHOOK = "sms:\n  backend: webhook\n  url: {url}\n  body_template: '{{}}'\n"
ALIYUN = (
    "sms:\n  backend: aliyun\n  access_key_id: AK\n  secret_env: ALIYUN_SECRET\n"
    "  sign_name: 测试\n  endpoint: {url}\n  templates: {{}}\n"
)


def load(tmp_path: Path, text: str) -> ChannelsConfig:
    path = tmp_path / "channels.yaml"
    path.write_text(text, encoding="utf-8")
    return load_channels_config(path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_smtp_password_without_encryption_is_refused_saying_why(tmp_path: Path) -> None:
    """security: none with a password to a real host: refused, naming the clear-text risk."""
    message = refusal(tmp_path, SMTP.format(host="smtp.example.org"))
    assert "channels.yaml" in message
    assert "明文" in message and "allow_plaintext" in message


def test_smtp_plaintext_is_accepted_for_a_loopback_server_when_allowed(tmp_path: Path) -> None:
    """allow_plaintext: true to 127.0.0.1 (a local test relay) is accepted."""
    cfg = load(tmp_path, SMTP.format(host="127.0.0.1") + "  allow_plaintext: true\n")
    assert cfg.email.backend == "smtp"


def test_allow_plaintext_does_not_open_a_remote_host(tmp_path: Path) -> None:
    """allow_plaintext: true for a non-loopback host is still refused."""
    text = SMTP.format(host="smtp.example.org") + "  allow_plaintext: true\n"
    assert "不是回环地址" in refusal(tmp_path, text)


def test_smtp_without_password_may_stay_unencrypted(tmp_path: Path) -> None:
    """A local relay without credentials (security: none, no password) stays accepted."""
    text = (
        "email:\n  backend: smtp\n  host: relay.internal\n  port: 25\n  security: none\n"
        "  from_addr: noreply@example.org\n"
    )
    assert load(tmp_path, text).email.backend == "smtp"


@pytest.mark.parametrize("template", [WEBHOOK, ALIYUN], ids=["webhook", "aliyun"])
def test_http_sms_endpoint_is_refused(tmp_path: Path, template: str) -> None:
    """An http:// SMS gateway on a real host is refused with the reason."""
    message = refusal(tmp_path, template.format(url="http://sms.example.org/send"))
    assert "http://" in message and "明文" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_http_sms_endpoint_on_loopback_is_accepted_when_allowed(tmp_path: Path, host: str) -> None:
    """http:// to a loopback test gateway with allow_plaintext: true is accepted."""
    text = WEBHOOK.format(url=f"http://{host}:8080/send") + "  allow_plaintext: true\n"
    assert load(tmp_path, text).sms.backend == "webhook"


def test_https_sms_endpoint_needs_no_opt_in(tmp_path: Path) -> None:
    """https:// endpoints are accepted as before."""
    assert load(tmp_path, WEBHOOK.format(url="https://sms.example.org/send")).sms.backend == (
        "webhook"
    )
