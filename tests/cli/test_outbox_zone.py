"""Issue 12 point 3: the file outbox writes times in the campaign's zone (+08:00)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from service.channels.base import Envelope
from service.channels.file_outbox import FileOutbox

NOW = datetime(2023, 6, 20, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def outbox(folder: Path) -> FileOutbox:
    return FileOutbox(
        folder,
        from_addr="ajw@example.gov.cn",
        clock=lambda: NOW,
        durable=False,
        tz=ZoneInfo("Asia/Shanghai"),
    )


def envelope(channel: str) -> Envelope:
    return Envelope(
        key=f"k/{channel}",
        channel=channel,  # type: ignore[arg-type]
        recipient_name="张三",
        address="zhangsan@163.com" if channel == "email" else "+8613800000001",
        subject="主题",
        text="正文",
    )


async def test_eml_names_carry_the_campaign_time(tmp_path: Path) -> None:
    """The .eml file name is the local time with its offset (20230620T090000…+0800)."""
    await outbox(tmp_path).send(envelope("email"))
    [name] = [p.name for p in (tmp_path / "email").glob("*.eml")]
    assert name.startswith("20230620T090000000000+0800-")


async def test_sms_lines_carry_the_campaign_time(tmp_path: Path) -> None:
    """sms.jsonl's ``at`` is +08:00, like every other time the operator reads."""
    await outbox(tmp_path).send(envelope("sms"))
    [line] = (tmp_path / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["at"] == "2023-06-20T09:00:00+08:00"
