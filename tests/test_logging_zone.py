"""Issue 12 item 3: log lines carry the campaign's zone like every other time shown."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import structlog

from service import logs


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Structlog configured for JSON into a buffer; UTC and the default config restored."""
    buf = io.StringIO()
    saved = structlog.get_config()
    logs.configure("INFO", json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buf))
    yield buf
    logs.set_zone(UTC)
    structlog.configure(**saved)


def test_log_timestamps_follow_the_campaign_zone(json_lines: io.StringIO) -> None:
    """After set_zone(Asia/Shanghai) a log line's timestamp ends in +08:00."""
    logs.set_zone(ZoneInfo("Asia/Shanghai"))
    structlog.get_logger().info("cycle done")
    stamp = json.loads(json_lines.getvalue().splitlines()[-1])["timestamp"]
    assert stamp.endswith("+08:00")
    assert abs((datetime.fromisoformat(stamp) - datetime.now(UTC)).total_seconds()) < 60
