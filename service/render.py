"""Rendering results for people (rich tables) and for programs (stable JSON)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

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
                            if k not in ("obligation", "state")
                        },
                        "days_late": (at - st.occurrence.due_at).days,
                    }
                    for st in items
                ],
            }
            for key, items in grouped.items()
        ],
    }


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    return t


def console() -> Console:
    return Console(soft_wrap=False, width=200)
