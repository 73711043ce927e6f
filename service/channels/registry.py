"""Build the configured channels from a YAML file; default to the file outbox.

Secrets are never in this file: it names the environment variables that hold them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..hosts import is_loopback
from ..sources import load_yaml, problems_from_validation, to_plain
from .base import Channel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _plaintext_allowed(what: str, host: str, allow_plaintext: bool) -> None:
    """Refuse credentials or personal data in clear text, except to a loopback test server.

    ``allow_plaintext: true`` is the explicit opt-in, and only for 127.0.0.1/::1/localhost:
    on any other host an eavesdropper on the network would read what is sent.
    """
    if not allow_plaintext:
        raise ValueError(
            f"{what}未加密：密码和收件人信息会以明文在网络上传输。请改用加密连接；"
            "仅当对方是本机回环地址（127.0.0.1、::1、localhost）上的测试服务器时，"
            "可设置 allow_plaintext: true"
        )
    if not is_loopback(host):
        raise ValueError(
            f"allow_plaintext: true 只允许用于本机回环地址的测试服务器，{host!r} 不是回环地址；"
            f"{what}必须加密"
        )


def _http_endpoint(url: str | None, allow_plaintext: bool) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() == "http":
        _plaintext_allowed("短信网关地址使用 http://，", parts.hostname or "", allow_plaintext)
    elif parts.scheme.lower() != "https":
        raise ValueError(f"短信网关地址必须以 https:// 开头：{url!r}")


class FileConfig(_Strict):
    backend: Literal["file"] = "file"
    folder: Path | None = None  # default: <state>/outbox


class SmtpConfig(_Strict):
    backend: Literal["smtp"]
    host: str
    port: int = Field(ge=1, le=65535)
    security: Literal["tls", "starttls", "none"]
    from_addr: str
    from_name: str = ""
    username: str | None = None
    password_env: str | None = None
    pool_size: int = Field(default=2, ge=1, le=32)
    timeout: float = Field(default=30.0, gt=0)
    validate_certs: bool = True
    cert_bundle: str | None = None
    allow_plaintext: bool = False  # security none with a password: loopback test servers only

    @model_validator(mode="after")
    def _no_plaintext_password(self) -> SmtpConfig:
        if self.security == "none" and self.password_env is not None:
            _plaintext_allowed(
                "SMTP 使用 security: none 且配置了密码，", self.host, self.allow_plaintext
            )
        return self


class TemplateRef(_Strict):
    code: str
    params: list[str]
    max_param_len: int | None = None


class SignedSmsConfig(_Strict):
    backend: Literal["aliyun", "tencent"]
    access_key_id: str
    secret_env: str
    sign_name: str
    templates: dict[str, TemplateRef]
    # The account's variable length limit when lower than the provider's default
    # (Alibaba 20, Tencent 6); `validate` checks every person's SMS against it.
    max_param_len: int | None = Field(default=None, ge=1, le=100)
    endpoint: str | None = None
    region: str | None = None
    sms_sdk_app_id: str | None = None  # tencent only
    timeout: float = Field(default=5.0, gt=0)
    allow_plaintext: bool = False  # an http:// endpoint: loopback test servers only

    @model_validator(mode="after")
    def _tencent_app(self) -> SignedSmsConfig:
        if self.backend == "tencent" and not self.sms_sdk_app_id:
            raise ValueError("sms_sdk_app_id is required for tencent")
        _http_endpoint(self.endpoint, self.allow_plaintext)
        return self


class WebhookConfig(_Strict):
    backend: Literal["webhook"]
    url: str
    body_template: str
    token_env: str | None = None
    hmac_secret_env: str | None = None
    provider_id_field: str | None = None
    timeout: float = Field(default=5.0, gt=0)
    allow_plaintext: bool = False  # an http:// url: loopback test servers only

    @model_validator(mode="after")
    def _encrypted(self) -> WebhookConfig:
        _http_endpoint(self.url, self.allow_plaintext)
        return self


class ChannelsConfig(_Strict):
    from_addr: str = "noreply@example.org"  # used by the file outbox
    from_name: str = "报送提醒系统"
    email: FileConfig | SmtpConfig = Field(default_factory=FileConfig, discriminator="backend")
    sms: FileConfig | SignedSmsConfig | WebhookConfig = Field(
        default_factory=FileConfig, discriminator="backend"
    )


def load_channels_config(path: Path | None) -> ChannelsConfig:
    if path is None:
        return ChannelsConfig()
    doc = load_yaml(path)
    try:
        return ChannelsConfig.model_validate(to_plain(doc or {}))
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(path, doc, exc)) from None


def build_channels(
    cfg: ChannelsConfig,
    state_dir: Path,
    sms_signature: str,
    clock: Callable[[], datetime] | None = None,
    durable: bool = True,
    tz: tzinfo = UTC,
) -> dict[str, Channel]:
    """Construct every channel; raises ChannelConfigError for a missing secret at start-up."""
    from .file_outbox import FileOutbox

    channels: dict[str, Channel] = {}
    outboxes: dict[Path, FileOutbox] = {}

    def outbox(folder: Path | None) -> FileOutbox:
        folder = folder or state_dir / "outbox"
        if folder not in outboxes:
            extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
            outboxes[folder] = FileOutbox(
                folder,
                from_addr=cfg.from_addr,
                from_name=cfg.from_name,
                sms_signature=sms_signature,
                durable=durable,
                tz=tz,
                **extra,
            )
        return outboxes[folder]

    if isinstance(cfg.email, FileConfig):
        channels["email"] = outbox(cfg.email.folder).for_channel("email")
    else:
        from .email import EmailChannel, SmtpSettings

        settings = cfg.email.model_dump(exclude={"backend", "allow_plaintext"})
        # The Date header from the injected clock, as the file outbox's: a replay's
        # messages carry the replayed moment.
        timing: dict[str, Any] = {"clock": clock} if clock is not None else {}
        channels["email"] = EmailChannel(SmtpSettings(**settings), **timing)
    sms = cfg.sms
    if isinstance(sms, FileConfig):
        channels["sms"] = outbox(sms.folder).for_channel("sms")
    elif isinstance(sms, WebhookConfig):
        from .sms_webhook import WebhookSettings, WebhookSms

        hook = sms.model_dump(exclude={"backend", "allow_plaintext"})
        channels["sms"] = WebhookSms(WebhookSettings(**hook))
    else:
        from .sms_common import AliyunSettings, SmsTemplate, TencentSettings

        templates = {
            k: SmsTemplate(t.code, tuple(t.params), t.max_param_len)
            for k, t in sms.templates.items()
        }
        account = {"default_max_param_len": sms.max_param_len} if sms.max_param_len else {}
        if sms.backend == "aliyun":
            from .sms_aliyun import AliyunSms

            channels["sms"] = AliyunSms(
                AliyunSettings(
                    access_key_id=sms.access_key_id,
                    secret_env=sms.secret_env,
                    sign_name=sms.sign_name,
                    templates=templates,
                    timeout=sms.timeout,
                    endpoint=sms.endpoint or AliyunSettings.endpoint,
                    region_id=sms.region or AliyunSettings.region_id,
                    **account,
                )
            )
        else:
            from .sms_tencent import TencentSms

            channels["sms"] = TencentSms(
                TencentSettings(
                    access_key_id=sms.access_key_id,
                    secret_env=sms.secret_env,
                    sign_name=sms.sign_name,
                    templates=templates,
                    timeout=sms.timeout,
                    sms_sdk_app_id=sms.sms_sdk_app_id or "",
                    endpoint=sms.endpoint or TencentSettings.endpoint,
                    region=sms.region or TencentSettings.region,
                    **account,
                )
            )
    return channels
