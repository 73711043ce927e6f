"""Fixes found by held-out checks (issue 9.6): campaign end in the last year of the data,
an event notice that reads right for every event, digests that never say "逾期0天"."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from service.config import Settings
from service.model import load_model
from service.planner import Planner
from service.simulate import simulate
from service.steps import Timeline

SHANGHAI = ZoneInfo("Asia/Shanghai")


def shifted_to_2026(schedule_path: Path, write_schedule: Callable[[str], Path]) -> Path:
    """The shipped schedule moved to 2026: its last deadline is 12-31 of the data's last year."""
    return write_schedule(schedule_path.read_text(encoding="utf-8").replace("2023", "2026"))


def test_a_campaign_ending_on_the_last_day_of_the_holiday_data_plans_to_its_end(
    schedule_path: Path, write_schedule: Callable[[str], Path], contacts_dir: Path
) -> None:
    """Steps that would fall in 2027 (after the end) are dropped, not an error asking for 2027."""
    model = load_model(shifted_to_2026(schedule_path, write_schedule), contacts_dir)
    timeline = Timeline(model)
    end = datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert timeline.end == end
    assert all(s.moment < end for s in timeline.steps)
    messages = Planner(timeline).plan({}, None, end).messages
    assert messages and max(m.due_at for m in messages) < end


async def test_a_campaign_ending_on_the_last_day_of_the_holiday_data_runs(
    schedule_path: Path,
    write_schedule: Callable[[str], Path],
    contacts_dir: Path,
    templates_dir: Path,
    tmp_path: Path,
) -> None:
    """``simulate`` of its last days runs to the end and sends the end notice."""
    settings = Settings(
        schedule=shifted_to_2026(schedule_path, write_schedule),
        contacts=contacts_dir,
        templates=templates_dir,
        state_dir=tmp_path / "state",
        database_url=None,
        channels_file=None,
    )
    start = datetime(2026, 12, 28, tzinfo=SHANGHAI)
    out = tmp_path / "out"
    result = await simulate(settings, start, datetime(2027, 1, 1, tzinfo=SHANGHAI), out)
    assert result.sent > 0
    text = (out / "messages.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    ends = [
        m
        for m in rows
        if m["channel"] == "email" and any(it["obligation"] == "campaign-end" for it in m["items"])
    ]
    assert ends
    assert all("举行" not in m["body"] and "活动结束" in m["body"] for m in ends)
