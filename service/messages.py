"""What a message says: the template context for each kind, and digest attachments."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime, tzinfo
from typing import Any

from . import sheets
from .directory import Person
from .model import CampaignModel
from .occurrences import Occurrence
from .schedule import OfficeContact
from .status import Counts

WEEKDAY_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def day_label(day: date) -> str:
    return f"{day.month}月{day.day}日（{WEEKDAY_ZH[day.weekday()]}）"


def moment_label(moment: datetime, model: CampaignModel) -> str:
    return _moment_label(moment, model.schedule.campaign.tz)


# Every message of a batch shows the same few moments (due dates, "now"): cached.
@functools.lru_cache(maxsize=4096)
def _moment_label(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{day_label(local.date())}{local:%H:%M}"


@functools.lru_cache(maxsize=64)
def _office(contact: OfficeContact) -> dict[str, Any]:
    """The office block of every message (shared: the sandbox cannot modify it)."""
    return contact.model_dump()


def period_label(occ: Occurrence) -> str:
    if occ.kind == "weekly":
        return f"第{int(occ.period.split('-W')[1])}周"
    if occ.kind == "monthly":
        year, month = occ.period.split("-")
        return f"{year}年{int(month)}月"
    return ""


def item(model: CampaignModel, occ: Occurrence, count: int, now: datetime) -> dict[str, Any]:
    ob = model.schedule.obligation(occ.obligation)
    return {
        "obligation": occ.obligation,
        "title": ob.title,
        "short_title": ob.sms_title,
        "period": occ.period,
        "period_label": period_label(occ),
        "due": moment_label(occ.due_at, model),
        "due_short": f"{occ.due_date.month}月{occ.due_date.day}日",
        "shifted": occ.shifted,
        "nominal": day_label(occ.nominal_date),
        "form": ob.form,
        "how_to_submit": ob.how_to_submit,
        "count": count,
        "min": occ.quota_min,
        "target": occ.quota_goal,
        "days_late": max(0, (now - occ.due_at).days),
    }


def base_context(model: CampaignModel, person: Person, kind: str, now: datetime) -> dict[str, Any]:
    camp = model.schedule.campaign
    return {
        "kind": kind,
        "campaign": {"key": camp.key, "name": camp.name},
        "office": _office(camp.contact),
        "recipient": {"id": person.id, "name": person.name, "role": person.role},
        "now": moment_label(now, model),
    }


def unit_context(
    model: CampaignModel,
    person: Person,
    kind: str,
    unit: str,
    occurrences: Iterable[Occurrence],
    counts: Counts,
    now: datetime,
) -> dict[str, Any]:
    ctx = base_context(model, person, kind, now)
    ctx["unit"] = {"id": unit, "name": model.directory.units[unit].name}
    occs = list(occurrences)
    ctx["items"] = [
        item(model, o, counts.get((unit, o.obligation, o.period), 0), now) for o in occs
    ]
    if kind == "notice":
        occ = occs[0]
        ob = model.schedule.obligation(occ.obligation)
        ctx["event"] = {
            "title": ob.title,
            "short_title": ob.sms_title,
            "when": moment_label(occ.due_at, model),
            "when_short": f"{occ.due_date.month}月{occ.due_date.day}日",
        }
    return ctx


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
        rows.append(
            {
                "obligation": obligation,
                "title": model.schedule.obligation(obligation).title,
                "unit": unit,
                "unit_name": model.directory.units[unit].name,
                "period": period,
                "period_label": period_label(occ),
                "due": moment_label(occ.due_at, model),
                "days_late": max(0, (now - occ.due_at).days),
                "progress": f"{count}/{occ.quota_min}",
            }
        )
    rows.sort(key=lambda r: (r["obligation"], r["period"], r["unit"]))
    return rows


def digest_context(
    model: CampaignModel, person: Person, rows: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    ctx = base_context(model, person, "digest", now)
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        groups.setdefault(row["obligation"], {"title": row["title"], "rows": []})["rows"].append(
            row
        )
    scope = model.directory.units[person.scope or ""]
    ctx["digest"] = {
        "scope_name": scope.name,
        "as_of": moment_label(now, model),
        "groups": list(groups.values()),
        "total": len(rows),
        "unit_count": len({r["unit"] for r in rows}),
    }
    return ctx


HEADER = ("事项", "单位", "单位编码", "周期", "截止时间", "逾期天数", "已报/最低")


def _table(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["title"],
            r["unit_name"],
            r["unit"],
            r["period_label"] or r["period"],
            r["due"],
            r["days_late"],
            r["progress"],
        )
        for r in rows
    ]


def digest_csv(rows: list[dict[str, Any]]) -> bytes:
    return sheets.csv_bytes(HEADER, _table(rows))


def digest_xlsx(rows: list[dict[str, Any]]) -> bytes:
    widths = (36, 24, 20, 14, 26, 10, 10)
    return sheets.xlsx_bytes([sheets.Sheet("逾期名单", HEADER, _table(rows), widths)])


def sample_contexts(model: CampaignModel) -> list[tuple[str, dict[str, Any]]]:
    """One realistic context per message kind, from the campaign's own data."""
    directory = model.directory
    person = next(iter(directory.people))
    supervisor = next(iter(directory.supervisors()), person)
    subs = model.submittable()
    events = [o for o in model.occurrences if o.kind == "event"]
    out: list[tuple[str, dict[str, Any]]] = []
    if subs:
        occ = max(subs, key=lambda o: o.quota_goal)
        unit = model.owers[occ.obligation][0]
        now = occ.due_at
        out.extend(
            (kind, unit_context(model, person, kind, unit, [occ, subs[0]], {}, now))
            for kind in ("reminder", "overdue", "escalation")
        )
        rows = digest_rows(
            model, [(u, o.key) for o in subs[:3] for u in model.owers[o.obligation][:3]], {}, now
        )
        if supervisor.scope:
            out.append(("digest", digest_context(model, supervisor, rows, now)))
    if events:
        occ = events[0]
        unit = model.owers[occ.obligation][0]
        out.append(("notice", unit_context(model, person, "notice", unit, [occ], {}, occ.due_at)))
    return out
