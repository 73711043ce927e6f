"""``service doctor``: the whole configuration checked as the daemon will use it.

Each check returns a :class:`Check` and never raises: an operator gets the complete list
of what is wrong in one run. The network checks (SMTP login, an SMS status query) are
skipped with ``offline``. Nothing is written, sent or migrated.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import ConfigError
from .hosts import is_loopback
from .model import CampaignModel

MAX_LISTED = 5  # problems shown per check; the count says how many more


@dataclass(frozen=True)
class Check:
    key: str  # schedule | directory | model | templates | channels | smtp | sms | database…
    ok: bool
    detail: str
    skipped: bool = False


def _problems(exc: ConfigError) -> str:
    lines = [str(p) for p in exc.problems[:MAX_LISTED]]
    more = len(exc.problems) - MAX_LISTED
    return "；".join(lines) + (f"；另有 {more} 个问题" if more > 0 else "")


def _error(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return _problems(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_checks(settings: Settings, *, offline: bool, now: datetime) -> list[Check]:
    checks: list[Check] = []
    model: CampaignModel | None = None
    try:
        from .schedule import parse_schedule

        schedule = parse_schedule(settings.schedule)
        checks.append(
            Check("schedule", True, f"{settings.schedule}：{len(schedule.obligations)} 个事项")
        )
    except Exception as exc:
        checks.append(Check("schedule", False, _error(exc)))
    try:
        from .directory import load_directory

        directory = load_directory(settings.contacts)
        checks.append(
            Check(
                "directory",
                True,
                f"{settings.contacts}：{len(directory.units)} 个单位，{len(directory.people)} 人",
            )
        )
    except Exception as exc:
        checks.append(Check("directory", False, _error(exc)))
    if all(c.ok for c in checks):
        try:
            from .model import load_model

            model = load_model(settings.schedule, settings.contacts)
            warnings = model.warnings()
            detail = f"{len(model.occurrences)} 个周期" + (
                f"；{len(warnings)} 条警告：" + "；".join(warnings[:MAX_LISTED]) if warnings else ""
            )
            checks.append(Check("model", True, detail))
        except Exception as exc:
            checks.append(Check("model", False, _error(exc)))
    checks.append(_templates(settings, model))
    checks.append(_timezone(model, now))
    checks += await check_channels(settings, model, offline=offline, now=now)
    checks.append(await _database(settings))
    checks.append(_state_folder(settings.state_dir))
    checks.append(personal_links(os.environ))
    return checks


ANY_HOST = ("0.0.0.0", "::")  # a listening address, not one a recipient can open


def personal_links(env: Mapping[str, str]) -> Check:
    """The links e-mails will carry: a usable signing key, and an address recipients reach."""
    from urllib.parse import urlsplit

    from .links import LINK_SECRET_ENV, PUBLIC_URL_ENV, LinkSigner

    secret = env.get(LINK_SECRET_ENV)
    if not secret:
        return Check("links", True, f"未设置 {LINK_SECRET_ENV}：邮件不附个人链接", skipped=True)
    try:
        signer = LinkSigner(secret)
    except ValueError:
        return Check(
            "links", False, f"{LINK_SECRET_ENV} 过短：须至少 16 个字符（守护进程会拒绝启动）"
        )
    url = env.get(PUBLIC_URL_ENV, "").rstrip("/")
    if not url:
        return Check("links", False, f"未设置 {PUBLIC_URL_ENV}：链接会指向本机地址，收件人无法打开")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Check("links", False, f"{PUBLIC_URL_ENV}={url!r} 不是 http(s) 地址")
    if parts.hostname is None or is_loopback(parts.hostname) or parts.hostname in ANY_HOST:
        return Check("links", False, f"{PUBLIC_URL_ENV}={url} 是本机地址，收件人无法打开")
    return Check("links", True, f"邮件附个人链接：{url}/l/…，{signer.ttl.days} 天内有效")


def _templates(settings: Settings, model: CampaignModel | None) -> Check:
    if model is None:
        return Check("templates", False, "日程或通讯录有误，无法检查模板", skipped=True)
    try:
        from .templates import check_templates

        check_templates(model, settings.templates)
        return Check("templates", True, f"{settings.templates}：每种消息的邮件与短信均已渲染")
    except Exception as exc:
        return Check("templates", False, _error(exc))


def _timezone(model: CampaignModel | None, now: datetime) -> Check:
    if model is None:
        return Check("timezone", False, "日程有误，无法检查时区", skipped=True)
    tz = model.schedule.campaign.tz
    local = now.astimezone(tz)
    lo, hi = model.calendar.data_range
    detail = f"{model.schedule.campaign.timezone}（现在 {local.isoformat(timespec='minutes')}）"
    detail += f"；节假日数据 {lo}–{hi}"
    holiday = model.holiday_warnings()
    if holiday:
        detail += "；" + "；".join(holiday)
    return Check("timezone", True, detail)


async def check_channels(
    settings: Settings, model: CampaignModel | None, *, offline: bool, now: datetime
) -> list[Check]:
    """The channels file as the daemon reads it (secrets present), then, online, an SMTP
    login and a harmless SMS status query with the configured credentials.

    A separate function so that ``validate``'s channels-file check (another change) and
    this one can be made the same call.
    """
    from .channels.registry import build_channels, load_channels_config

    where = str(settings.channels_file or "（未配置渠道文件：使用文件发件箱）")
    try:
        cfg = load_channels_config(settings.channels_file)
        signature = ""
        if model is not None:
            from .templates import check_templates

            try:
                signature = check_templates(model, settings.templates).sms.signature
            except Exception:  # reported by the templates check
                signature = ""
        channels = build_channels(cfg, settings.state_dir, signature, durable=False)
    except Exception as exc:
        return [Check("channels", False, f"{where}：{_error(exc)}")]
    out = [Check("channels", True, f"{where}：邮件 {cfg.email.backend}，短信 {cfg.sms.backend}")]
    try:
        if cfg.email.backend == "smtp":
            out.append(await _network("smtp", offline, lambda: _smtp_login(channels["email"])))
        if cfg.sms.backend in ("aliyun", "tencent"):
            out.append(await _network("sms", offline, lambda: _sms_query(channels["sms"], now)))
        elif cfg.sms.backend == "webhook":
            out.append(
                Check("sms", True, "Webhook 没有无副作用的查询接口：未联网检查", skipped=True)
            )
    finally:
        for channel in {id(c): c for c in channels.values()}.values():
            await channel.aclose()
    return out


async def _network(key: str, offline: bool, probe: Callable[[], Awaitable[str]]) -> Check:
    if offline:
        return Check(key, True, "--offline：跳过联网检查", skipped=True)
    try:
        return Check(key, True, await probe())
    except Exception as exc:
        return Check(key, False, _error(exc))


async def _smtp_login(channel: Any) -> str:
    """Connect, TLS as configured, log in when a user is set, QUIT: nothing is sent."""
    import aiosmtplib

    s = channel.settings
    client = aiosmtplib.SMTP(
        hostname=s.host,
        port=s.port,
        use_tls=s.security == "tls",
        start_tls=s.security == "starttls",
        validate_certs=s.validate_certs,
        cert_bundle=s.cert_bundle,
        timeout=min(s.timeout, 15.0),
        username=s.username,
        password=s.password.reveal() if s.password is not None else None,
    )
    await client.connect()
    try:
        await client.quit()
    finally:
        client.close()
    login = f"，用户 {s.username} 登录成功" if s.username else "（未配置登录）"
    return f"{s.host}:{s.port} 可连接（{s.security}）{login}"


async def _sms_query(channel: Any, now: datetime) -> str:
    """A status query for a number nobody sends to: proves the credentials, sends nothing."""
    from .channels.base import Envelope

    probe = Envelope(
        key="doctor/credentials-probe",
        channel="sms",
        recipient_name="",
        address="+8613800000000",
        subject="",
        text="",
    )
    await channel.find_accepted(probe, now)
    return f"{type(channel).__name__}：凭据有效（状态查询成功，未发送短信）"


async def _database(settings: Settings) -> Check:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from .store.db import MIGRATIONS, create_engine, current_revision

    url = settings.db_url
    try:
        label = make_url(url).render_as_string(hide_password=True)
    except Exception:
        return Check("database", False, "数据库 URL 无法解析")
    scheme = url.partition(":")[0].partition("+")[0]
    if scheme not in ("postgresql", "postgres", "sqlite"):
        return Check("database", False, f"{label}：不支持（支持 postgresql:// 与 sqlite:///）")
    sqlite_file = Path(url.split(":///", 1)[1]) if scheme == "sqlite" else None
    if sqlite_file is not None and not await asyncio.to_thread(sqlite_file.exists):
        return Check("database", True, f"{label}：尚不存在，首次运行时创建", skipped=True)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    engine = create_engine(url)
    try:
        current = await current_revision(engine)
    except Exception as exc:
        return Check("database", False, f"{label}：无法连接：{_error(exc)}")
    finally:
        await engine.dispose()
    if current != head:
        return Check(
            "database",
            False,
            f"{label}：结构版本 {current or '无'}，应为 {head}（运行 service migrate）",
        )
    return Check("database", True, f"{label}：可连接，结构为最新（{head}）")


def _state_folder(folder: Path) -> Check:
    """Writable, and readable by the service's user only (it holds personal data)."""
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK):
            return Check("state", False, f"{folder}：不存在，且 {parent} 不可写")
        return Check("state", True, f"{folder}：尚不存在，首次运行时以 0700 创建", skipped=True)
    if not folder.is_dir():
        return Check("state", False, f"{folder}：不是文件夹")
    mode = stat.S_IMODE(folder.stat().st_mode)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("state", False, f"{folder}：不可写（{exc.strerror}）")
    if mode & 0o077:
        return Check(
            "state",
            False,
            f"{folder}：权限 {mode:04o}，其他用户可访问（应为 0700：chmod 700 {folder}）",
        )
    return Check("state", True, f"{folder}：可写，权限 {mode:04o}")
