"""Supervisors' overdue digests: what each one says, and its spreadsheet attachment.

A digest people keep reading: days late in working days ("今日到期" / "逾期不足1天" instead
of 0), the liaison's name and phone for each overdue unit, what is new since the last
digest and what was resolved, units late for long in a section of their own, and a long
list summarised in the body with the full list attached.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import sheets
from .directory import Person
from .messages import base_context, late_days, late_label, moment_label, period_label
from .model import CampaignModel
from .status import Counts

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _phone(mobile: str | None) -> str:
    return mobile.removeprefix("+86") if mobile else ""


def digest_rows(
    model: CampaignModel, entries: Iterable[tuple[str, str]], counts: Counts, now: datetime
) -> list[dict[str, Any]]:
    """One row per overdue (unit, occurrence), ordered by obligation then unit."""
    rows = []
    for unit, occ_key in entries:
        obligation, _, period = occ_key.partition("@")
        occ = model.occurrence(obligation, period)
        if occ is None:
            continue
        count = counts.get((unit, obligation, period), 0)
        liaisons = model.directory.people_of(unit, "liaison")
        rows.append(
            {
                "key": f"{unit}/{occ_key}",
                "obligation": obligation,
                "title": model.schedule.obligation(obligation).title,
                "unit": unit,
                "unit_name": model.directory.units[unit].name,
                "period": period,
                "period_label": period_label(occ),
                "due": moment_label(occ.due_at, model),
                "days_late": late_days(model, occ.due_at, now),
                "late": late_label(model, occ.due_at, now),
                "progress": f"{count}/{occ.quota_min}",
                "liaison": "、".join(p.name for p in liaisons),
                "liaison_phone": "、".join(_phone(p.mobile) for p in liaisons if p.mobile),
            }
        )
    rows.sort(key=lambda r: (r["obligation"], r["period"], r["unit"]))
    return rows


def _groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        groups.setdefault(row["obligation"], {"title": row["title"], "rows": []})["rows"].append(
            row
        )
    return list(groups.values())


def digest_context(
    model: CampaignModel,
    person: Person,
    rows: list[dict[str, Any]],
    now: datetime,
    previous: set[str] | None = None,
    resolved: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``previous``: row keys of the last digest this person got (None: this is the first);
    ``resolved``: rows of that digest no longer overdue."""
    spec = model.schedule.campaign.digest
    ctx = base_context(model, person, "digest", now)
    recent = [r for r in rows if r["days_late"] <= spec.long_overdue_days]
    long = [r for r in rows if r["days_late"] > spec.long_overdue_days]
    new = [r for r in rows if previous is not None and r["key"] not in previous]
    scope = model.directory.units[person.scope or ""]
    ctx["digest"] = {
        "scope_name": scope.name,
        "as_of": moment_label(now, model),
        "groups": _groups(recent),
        "long_groups": _groups(long),
        "long_days": spec.long_overdue_days,
        "long_total": len(long),
        "total": len(rows),
        "unit_count": len({r["unit"] for r in rows}),
        "first": previous is None,
        "new": new,
        "resolved": resolved or [],
        # Past max_rows the body gives counts per obligation; the attachment has every row.
        "summarised": len(rows) > spec.max_rows,
        "counts": [{"title": g["title"], "count": len(g["rows"])} for g in _groups(rows)],
    }
    return ctx


HEADER = (
    "事项",
    "单位",
    "单位编码",
    "周期",
    "截止时间",
    "逾期工作日数",
    "已报/最低",
    "联络员",
    "联系电话",
)


def _table(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["title"],
            r["unit_name"],
            r["unit"],
            r["period_label"] or r["period"],
            r["due"],
            r["days_late"],  # a number: the sheet sorts and filters by it
            r["progress"],
            r["liaison"],
            r["liaison_phone"],
        )
        for r in rows
    ]


def digest_csv(rows: list[dict[str, Any]]) -> bytes:
    return sheets.csv_bytes(HEADER, _table(rows))


def digest_xlsx(rows: list[dict[str, Any]]) -> bytes:
    widths = (36, 24, 20, 14, 26, 14, 10, 12, 16)
    return sheets.xlsx_bytes([sheets.Sheet("逾期名单", HEADER, _table(rows), widths)])
