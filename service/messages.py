"""What a message says: the template context for each kind, and digest attachments."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from .directory import Person
from .errors import ConfigError
from .links import LINKED_KINDS
from .model import CampaignModel
from .occurrences import Occurrence
from .schedule import OfficeContact
from .status import Counts

WEEKDAY_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")


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


URGENCY_LABELS = (
    ("late", "已逾期"),
    ("today", "今日截止"),
    ("soon", "即将截止"),
    ("notice", "活动通知"),
)


def late_days(model: CampaignModel, due_at: datetime, now: datetime) -> int:
    """Whole working days missed since the deadline (0 on its day and the next morning)."""
    tz = model.schedule.campaign.tz
    return _late_days(model.calendar, due_at.astimezone(tz).date(), now.astimezone(tz).date())


@functools.lru_cache(maxsize=4096)
def _late_days(cal: Any, due: date, today: date) -> int:
    n, day = 0, due + timedelta(days=1)
    while day < today:
        try:
            n += cal.is_workday(day)
        except ConfigError:  # outside the holiday data: count the day
            n += 1
        day += timedelta(days=1)
    return n


def late_label(model: CampaignModel, due_at: datetime, now: datetime) -> str:
    """ "今日到期" / "逾期不足1天" / "逾期N个工作日": never "逾期0天"."""
    if now <= due_at:
        tz = model.schedule.campaign.tz
        same_day = now.astimezone(tz).date() == due_at.astimezone(tz).date()
        return "今日到期" if same_day else ""
    n = late_days(model, due_at, now)
    return f"逾期{n}个工作日" if n else "逾期不足1天"


def bundle_context(
    model: CampaignModel,
    person: Person,
    kind: str,
    entries: Iterable[tuple[str, str, Occurrence]],
    counts: Counts,
    now: datetime,
) -> dict[str, Any]:
    """A bundle: every item one recipient is owed now, grouped by urgency.

    ``entries`` are (item kind, unit, occurrence). Sections come most urgent first (已逾期,
    今日截止, 即将截止, then event notices), each by due time.
    """
    ctx = base_context(model, person, kind, now)
    tz = model.schedule.campaign.tz
    today = now.astimezone(tz).date()
    units = model.directory.units
    rows = []
    for item_kind, unit, occ in entries:
        row = item(model, occ, counts.get((unit, occ.obligation, occ.period), 0), now)
        if item_kind == "notice":
            urgency = "notice"
        elif item_kind in ("overdue", "escalation") or now > occ.due_at:
            urgency = "late"
        elif occ.due_date == today:
            urgency = "today"
        else:
            urgency = "soon"
        row.update(
            kind=item_kind,
            urgency=urgency,
            unit=unit,
            unit_name=units[unit].name,
            late=late_label(model, occ.due_at, now),
            event=_event(model, occ) if item_kind == "notice" else None,
        )
        rows.append((occ.due_at, row))
    order = {key: i for i, (key, _) in enumerate(URGENCY_LABELS)}
    rows.sort(key=lambda r: (order[r[1]["urgency"]], r[0], r[1]["title"], r[1]["unit"]))
    items = [r for _, r in rows]
    ctx["items"] = items
    ctx["sections"] = [
        {"key": key, "label": label, "entries": [r for r in items if r["urgency"] == key]}
        for key, label in URGENCY_LABELS
        if any(r["urgency"] == key for r in items)
    ]
    ctx["summary"] = {key: sum(r["urgency"] == key for r in items) for key, _ in URGENCY_LABELS} | {
        "total": sum(r["urgency"] != "notice" for r in items),
        "all": len(items),
    }
    seen = list(dict.fromkeys(r["unit"] for r in items))
    ctx["units"] = [{"id": u, "name": units[u].name} for u in seen]
    ctx["unit"] = ctx["units"][0]
    ctx["first"] = items[0]
    notices = [r for r in items if r["urgency"] == "notice"]
    ctx["event"] = notices[0]["event"] if notices else None
    return ctx


def _event(model: CampaignModel, occ: Occurrence) -> dict[str, Any]:
    ob = model.schedule.obligation(occ.obligation)
    return {
        "title": ob.title,
        "short_title": ob.sms_title,
        "when": moment_label(occ.due_at, model),
        "when_short": f"{occ.due_date.month}月{occ.due_date.day}日",
    }


def base_context(model: CampaignModel, person: Person, kind: str, now: datetime) -> dict[str, Any]:
    camp = model.schedule.campaign
    return {
        "kind": kind,
        "campaign": {"key": camp.key, "name": camp.name},
        "office": _office(camp.contact),
        "recipient": {"id": person.id, "name": person.name, "role": person.role},
        "now": moment_label(now, model),
        # The recipient's personal link ({"url", "days"}), set by the dispatcher when links
        # are configured (service/links.py); templates fall back to "contact the office".
        "link": None,
    }


# What template checks and previews show for a personal link (never a working token).
SAMPLE_LINK = {"url": "https://example.org/l/SAMPLE", "days": 45}


def sample_contexts(model: CampaignModel) -> list[tuple[str, dict[str, Any]]]:
    """One realistic context per message kind, from the campaign's own data.

    Bundles are as large as they get in the campaign's busiest shape: a late item, one due
    that day, one due later and an event notice, so that every section is rendered.
    """
    from .digests import digest_context, digest_rows  # local: digests builds on this module

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
        later = [o for o in subs if o.due_at > now][:1]
        earlier = [o for o in subs if o.due_at < now][:1]
        for kind in ("reminder", "overdue", "escalation"):
            late_kind = "overdue" if kind == "reminder" else kind
            entries = [(late_kind, unit, o) for o in earlier] if kind != "reminder" else []
            entries += [("reminder", unit, occ)] + [("reminder", unit, o) for o in later]
            entries += [("notice", unit, o) for o in events[:1]]
            out.append((kind, bundle_context(model, person, kind, entries, {}, now)))
        rows = digest_rows(
            model, [(u, o.key) for o in subs[:3] for u in model.owers[o.obligation][:3]], {}, now
        )
        if supervisor.scope:
            out.append(("digest", digest_context(model, supervisor, rows, now)))
    if events:
        occ = events[0]
        unit = model.owers[occ.obligation][0]
        entries = [("notice", unit, occ)]
        out.append(("notice", bundle_context(model, person, "notice", entries, {}, occ.due_at)))
    for kind, ctx in out:
        if kind in LINKED_KINDS:
            ctx["link"] = SAMPLE_LINK
    return out
