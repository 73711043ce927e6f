"""Issue 9 item 6: e-mail standards, checked on the bytes a real aiosmtpd server receives.

The channel is built the way the service builds it (``build_channels`` from a channels
file, with the injected clock), sends one digest-like message with a long Chinese
subject, a CSV and an XLSX attachment, and the test parses what arrived.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest

from service.channels.base import Attachment, Envelope
from service.channels.registry import build_channels, load_channels_config
from tests.channels.smtp_server import RecordingHandler, running_server

KEY = "jilin-2023/weekly-stats/2023-W24/changchun/remind-1/changchun-liaison/email"
# Long enough for three header lines; the first one was 77 characters before the fix.
SUBJECT = "【报送提醒】报送“安全生产月”活动联络员反馈表将于5月22日截止，请各单位按时报送"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
INJECTED = datetime(2023, 5, 18, 1, 5, 7, tzinfo=UTC)  # a replayed moment, not the wall clock


@pytest.fixture
async def received(tmp_path: Path) -> bytes:
    """The raw bytes of one message sent through the SMTP channel of a channels file."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        path = tmp_path / "channels.yaml"
        path.write_text(
            f"email:\n  backend: smtp\n  host: {server.host}\n  port: {server.port}\n"
            "  security: none\n  from_addr: noreply@example.org\n  from_name: 报送提醒系统\n",
            encoding="utf-8",
        )
        channels = build_channels(
            load_channels_config(path), tmp_path, "签名", clock=lambda: INJECTED
        )
        try:
            await channels["email"].send(
                Envelope(
                    key=KEY,
                    channel="email",
                    recipient_name="长春市应急管理局 张三",
                    address="changchun-liaison@example.org",
                    subject=SUBJECT,
                    text="请按时报送。",
                    attachments=(
                        Attachment("逾期名单20230518.csv", "单位\n长春\n".encode(), "text/csv"),
                        Attachment("逾期名单20230518.xlsx", b"PK\x03\x04" * 50, XLSX_MIME),
                    ),
                )
            )
        finally:
            await channels["email"].aclose()
        return await handler.next_message()


@pytest.fixture
def header_lines(received: bytes) -> list[str]:
    """Every header line (top level and MIME parts) as received."""
    lines = received.decode("ascii").split("\r\n")
    return [line for line in lines if line.startswith((" ", "\t")) or ":" in line.split(" ")[0]]


def _parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def test_lines_with_encoded_words_are_at_most_76_characters(header_lines: list[str]) -> None:
    """RFC 2047 §2: every header line holding an encoded-word is ≤ 76 characters."""
    encoded = [line for line in header_lines if "=?" in line]
    assert len([line for line in encoded if line.startswith("Subject:")]) == 1
    assert len(encoded) >= 4  # subject continuation lines, names, attachment names
    assert [line for line in encoded if len(line) > 76] == []


def test_long_chinese_subject_still_decodes(received: bytes) -> None:
    """The refolded subject decodes back to the rendered text."""
    assert _parse(received)["Subject"] == SUBJECT


def test_csv_attachment_says_utf8(received: bytes) -> None:
    """The CSV part is ``text/csv; charset=utf-8``."""
    parts = {p.get_filename(): p for p in _parse(received).iter_attachments()}
    csv_part = parts["逾期名单20230518.csv"]
    assert csv_part.get_content_type() == "text/csv"
    assert csv_part.get_content_charset() == "utf-8"


def test_no_header_folds_right_after_its_colon(header_lines: list[str]) -> None:
    """No field's first line is its bare name (the xlsx Content-Type was)."""
    bare = [line for line in header_lines if line.endswith(":") and not line[:1].isspace()]
    assert bare == []
    xlsx = [line for line in header_lines if XLSX_MIME in line]
    assert xlsx and all(line.startswith("Content-Type: ") for line in xlsx)


def test_campaign_key_is_plain_ascii_on_one_line(header_lines: list[str]) -> None:
    """X-Campaign-Key carries the key itself, not an encoded-word, unfolded."""
    assert f"X-Campaign-Key: {KEY}" in header_lines


def test_smtp_date_comes_from_the_injected_clock(received: bytes) -> None:
    """The Date header is the injected clock's moment (as the file outbox's), not now."""
    date = _parse(received)["Date"]
    assert email.utils.parsedate_to_datetime(str(date)) == INJECTED
