"""Build the configured channels from a YAML file; default to the file outbox.

Secrets are never in this file: it names the environment variables that hold them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..sources import load_yaml, problems_from_validation, to_plain
from .base import Channel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    endpoint: str | None = None
    region: str | None = None
    sms_sdk_app_id: str | None = None  # tencent only
    timeout: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _tencent_app(self) -> SignedSmsConfig:
        if self.backend == "tencent" and not self.sms_sdk_app_id:
            raise ValueError("sms_sdk_app_id is required for tencent")
        return self


class WebhookConfig(_Strict):
    backend: Literal["webhook"]
    url: str
    body_template: str
    token_env: str | None = None
    hmac_secret_env: str | None = None
    provider_id_field: str | None = None
    timeout: float = Field(default=5.0, gt=0)


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

        channels["email"] = EmailChannel(SmtpSettings(**cfg.email.model_dump(exclude={"backend"})))
    sms = cfg.sms
    if isinstance(sms, FileConfig):
        channels["sms"] = outbox(sms.folder).for_channel("sms")
    elif isinstance(sms, WebhookConfig):
        from .sms_webhook import WebhookSettings, WebhookSms

        channels["sms"] = WebhookSms(WebhookSettings(**sms.model_dump(exclude={"backend"})))
    else:
        from .sms_common import AliyunSettings, SmsTemplate, TencentSettings

        templates = {
            k: SmsTemplate(t.code, tuple(t.params), t.max_param_len)
            for k, t in sms.templates.items()
        }
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
                )
            )
    return channels
