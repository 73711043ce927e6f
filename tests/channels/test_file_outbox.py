"""File outbox: local .eml files and SMS JSON lines, idempotent and durable."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.channels.base import (
    Attachment,
    Channel,
    Envelope,
    PermanentDeliveryError,
    TransientDeliveryError,
    message_id_for,
)
from service.channels.email import message_bytes
from service.channels.file_outbox import FileOutbox

KEY = "2024-spring/liaison/2024-05/changchun/step1/zhangsan/email"
SMS_KEY = "2024-spring/liaison/2024-05/changchun/step1/zhangsan/sms"
DOMAIN = "reminders.example.gov.cn"
NOW = datetime(2024, 5, 15, 8, 0, tzinfo=UTC)


class StepClock:
    """Advances one second per call, so a second write would get a new file name."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def outbox(folder: Path) -> FileOutbox:
    return FileOutbox(
        folder,
        from_addr="ajw@example.gov.cn",
        from_name="吉林省安委办",
        message_id_domain=DOMAIN,
        sms_signature="吉林省安委办",
        clock=StepClock(),
    )


def email_envelope(key: str = KEY) -> Envelope:
    return Envelope(
        key=key,
        channel="email",
        recipient_name="张三",
        address="zhangsan@163.com",
        subject="【提醒】请于5月22日前报送联络员反馈表",
        text="请于5月22日前报送。",
        html="<p>请于5月22日前报送。</p>",
        attachments=(Attachment("附件1.csv", "单位\n长春\n".encode(), "text/csv"),),
    )


def sms_envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "key": SMS_KEY,
        "channel": "sms",
        "recipient_name": "张三",
        "address": "+8618644975330",
        "subject": "reminder",
        "text": "张三您好，请于5月22日前报送联络员反馈表。",
        "sms_template": "reminder",
        "sms_params": {"name": "张三", "date": "5月22日"},
    }
    fields.update(changes)
    return Envelope(**fields)


async def test_eml_is_written_and_parses_with_same_message_id(tmp_path: Path) -> None:
    """The .eml opens as a message whose Message-ID is message_id_for(key, domain)."""
    result = await outbox(tmp_path).send(email_envelope())
    [path] = list((tmp_path / "email").glob("*.eml"))
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Message-ID"] == message_id_for(KEY, DOMAIN) == result.provider_id
    assert msg["Subject"] == "【提醒】请于5月22日前报送联络员反馈表"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["附件1.csv"]
    assert path.name.startswith("20240515T080001") and str(path) in result.detail


async def test_same_key_twice_leaves_one_eml(tmp_path: Path) -> None:
    """Writing one key twice (a retry after a crash) keeps a single .eml file."""
    box = outbox(tmp_path)
    await box.send(email_envelope())
    second = await box.send(email_envelope())
    assert len(list((tmp_path / "email").glob("*.eml"))) == 1
    assert second.detail.startswith("already in outbox")


async def test_concurrent_sends_of_one_key_leave_one_eml(tmp_path: Path) -> None:
    """Two racing sends of the same key still produce a single .eml file."""
    box = outbox(tmp_path)
    await asyncio.gather(box.send(email_envelope()), box.send(email_envelope()))
    assert len(list((tmp_path / "email").glob("*.eml"))) == 1


async def test_only_named_eml_files_remain(tmp_path: Path) -> None:
    """After writes only <UTC stamp>-<sha256 prefix>.eml files remain, no temp files."""
    box = outbox(tmp_path)
    await box.send(email_envelope())
    await box.send(email_envelope(f"{KEY}/other"))
    names = [p.name for p in (tmp_path / "email").iterdir()]
    assert len(names) == 2
    assert all(re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{32}\.eml", n) for n in names)


async def test_sms_line_appended_with_fields(tmp_path: Path) -> None:
    """Each SMS becomes one JSON line with key, to, name, template, params, text."""
    box = outbox(tmp_path)
    await box.send(sms_envelope())
    await box.send(sms_envelope(key=f"{SMS_KEY}/2"))
    lines = (tmp_path / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 2
    assert first["key"] == SMS_KEY and first["to"] == "+8618644975330"
    assert first["name"] == "张三" and first["template"] == "reminder"
    assert first["params"] == {"name": "张三", "date": "5月22日"}
    assert first["text"] == "张三您好，请于5月22日前报送联络员反馈表。"
    assert first["segments"] == 1


async def test_long_sms_counts_segments_with_signature(tmp_path: Path) -> None:
    """64 characters plus the 8-character 【吉林省安委办】 are 72, so two segments."""
    await outbox(tmp_path).send(sms_envelope(text="提" * 64))
    line = (tmp_path / "sms.jsonl").read_text(encoding="utf-8")
    assert json.loads(line)["segments"] == 2


async def test_unwritable_folder_is_transient_and_names_path(tmp_path: Path) -> None:
    """An uncreatable folder (its parent is a file) is transient and names the path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(TransientDeliveryError, match="not-a-dir/outbox/email/"):
        await outbox(blocker / "outbox").send(email_envelope())


async def test_unwritable_sms_file_is_transient_and_names_path(tmp_path: Path) -> None:
    """An SMS append that hits an OSError is transient and names sms.jsonl."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(TransientDeliveryError, match=r"not-a-dir/sms\.jsonl"):
        await outbox(blocker).send(sms_envelope())


async def test_channel_views_serve_both_and_refuse_the_other(tmp_path: Path) -> None:
    """for_channel gives Channel views that accept only their own kind."""
    box = outbox(tmp_path)
    email_channel, sms_channel = box.for_channel("email"), box.for_channel("sms")
    assert isinstance(email_channel, Channel) and email_channel.name == "email"
    assert sms_channel.name == "sms"
    await sms_channel.send(sms_envelope())
    with pytest.raises(PermanentDeliveryError):
        await email_channel.send(sms_envelope())


async def test_eml_holds_the_email_channel_bytes(tmp_path: Path) -> None:
    """The .eml is message_bytes' output (what SMTP sends): CRLF, 7-bit, <= 78 columns."""
    await outbox(tmp_path).send(email_envelope())
    [path] = list((tmp_path / "email").glob("*.eml"))
    raw = path.read_bytes()
    expected = message_bytes(
        email_envelope(),
        from_addr="ajw@example.gov.cn",
        from_name="吉林省安委办",
        message_id_domain=DOMAIN,
        date=NOW + timedelta(seconds=1),  # StepClock's first reading
    )
    boundary = re.compile(rb"={15}\d{19}==")
    assert boundary.sub(b"B", raw) == boundary.sub(b"B", expected)
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    [part] = list(msg.iter_attachments())
    assert part.get_payload(decode=True) == "单位\n长春\n".encode()
