"""Rendering results for people (rich tables) and for programs (stable JSON)."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .model import CampaignModel
from .status import UnitStatus

STATE_LABEL = {"done": "已完成", "outstanding": "待报送", "overdue": "逾期"}


def iso_local(moment: datetime, model: CampaignModel) -> str:
    return moment.astimezone(model.schedule.campaign.tz).isoformat()


def dump_json(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, indent=2)


def calendar_payload(model: CampaignModel) -> dict[str, Any]:
    titles = {ob.key: ob.title for ob in model.schedule.obligations}
    return {
        "campaign": model.key,
        "timezone": model.schedule.campaign.timezone,
        "occurrences": [
            {
                "key": o.key,
                "obligation": o.obligation,
                "title": titles[o.obligation],
                "period": o.period,
                "kind": o.kind,
                "due": iso_local(o.due_at, model),
                "nominal_date": o.nominal_date.isoformat(),
                "shifted": o.shifted,
                "units_owing": len(model.owers[o.obligation]),
                "quota": {"min": o.quota_min, "target": o.quota_goal},
            }
            for o in model.occurrences
        ],
    }


def status_row(st: UnitStatus, model: CampaignModel) -> dict[str, Any]:
    return {
        "unit": st.unit,
        "unit_name": model.directory.units[st.unit].name,
        "obligation": st.occurrence.obligation,
        "period": st.occurrence.period,
        "due": iso_local(st.occurrence.due_at, model),
        "state": st.state,
        "count": st.count,
        "min": st.occurrence.quota_min,
        "target": st.occurrence.quota_goal,
        "completed_at": iso_local(st.completed_at, model) if st.completed_at else None,
        "late_days": st.days_late,
        "over_count": st.over_count,
    }


def status_payload(model: CampaignModel, rows: list[UnitStatus], at: datetime) -> dict[str, Any]:
    summary = {"done": 0, "outstanding": 0, "overdue": 0}
    for st in rows:
        summary[st.state] += 1
    return {
        "campaign": model.key,
        "at": iso_local(at, model),
        "summary": summary,
        "rows": [status_row(st, model) for st in rows],
    }


def overdue_payload(
    model: CampaignModel, grouped: dict[str, list[UnitStatus]], at: datetime, scope: str | None
) -> dict[str, Any]:
    titles = {ob.key: ob.title for ob in model.schedule.obligations}
    return {
        "campaign": model.key,
        "at": iso_local(at, model),
        "scope": scope,
        "obligations": [
            {
                "obligation": key,
                "title": titles[key],
                "units": [
                    {
                        **{
                            k: v
                            for k, v in status_row(st, model).items()
                            if k
                            not in (
                                "obligation",
                                "state",
                                "completed_at",
                                "late_days",
                                "over_count",
                            )
                        },
                        "days_late": (at - st.occurrence.due_at).days,
                    }
                    for st in items
                ],
            }
            for key, items in grouped.items()
        ],
    }


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """Data as data: control characters (ESC of a terminal escape sequence, NUL, CR…) are
    shown as visible ``\\xNN`` text so they can neither move the cursor nor hide text."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(value))


def cell(value: object) -> Text:
    """A table cell that rich never parses as markup (``[/]``, ``[link=…]`` stay text)."""
    return Text(plain(value))


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=cell(title) if title else None, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(cell(col), overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    return t


def console(file: IO[str] | None = None) -> Console:
    """Fits the terminal it prints to; in a pipe (no terminal) lines are not wrapped unless
    COLUMNS says how wide, so ``| grep`` sees whole rows."""
    con = Console(file=file, soft_wrap=False, highlight=False, markup=False, emoji=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con.width = 200
    return con
