"""What a claimed message says at send time: its items re-checked, its template context.

A bundle's items are re-checked one by one (submitted meanwhile, no longer owed, expired):
those left decide the message's kind (the most urgent) and content; none left and the
message is cancelled. A digest compares itself with the last one its reader got.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .channels.base import Attachment
from .digests import XLSX_MIME, digest_context, digest_csv, digest_rows, digest_xlsx
from .directory import Person
from .forms import blank_file_name, form_of
from .messages import bundle_context
from .occurrences import Occurrence
from .planner import most_urgent
from .runtime import Runtime
from .status import Counts
from .store.outbox import Claimed


def compose(
    rt: Runtime,
    msg: Claimed,
    person: Person,
    counts: Counts,
    now: datetime,
    previous: list[dict[str, Any]] | None = None,
) -> tuple[str, dict[str, Any] | None, tuple[Attachment, ...], str]:
    """(kind, context or None if nothing is left to say, attachments, why not)."""
    model = rt.model
    if msg.kind == "digest":
        return _digest(rt, msg, person, counts, now, previous)
    entries, dropped = recheck_items(rt, msg, counts, now)
    if not entries:
        return msg.kind, None, (), dropped
    top = most_urgent([k for k, _, _ in entries])
    forms = blank_forms(rt, entries) if msg.channel == "email" else ()
    return top, bundle_context(model, person, top, entries, counts, now), forms, ""


def blank_forms(rt: Runtime, entries: list[tuple[str, str, Occurrence]]) -> tuple[Attachment, ...]:
    """The blank forms a bundle's e-mail attaches: for each reminder or overdue item whose
    form says ``attach_to_reminders``, the form with the unit's name filled in — once per
    form and unit, however many periods the bundle names."""
    out: list[Attachment] = []
    seen: set[tuple[str, str]] = set()
    units = rt.model.directory.units
    for kind, unit, occ in entries:
        if kind not in ("reminder", "overdue") or (occ.obligation, unit) in seen:
            continue
        seen.add((occ.obligation, unit))
        ob = rt.model.schedule.obligation(occ.obligation)
        form = form_of(ob)
        if form is None or not form.attach_to_reminders:
            continue
        name = units[unit].name
        data = rt.blank_forms.xlsx(ob, form, name)
        out.append(Attachment(blank_file_name(ob, form, name), data, XLSX_MIME))
    return tuple(out)


def _digest(
    rt: Runtime,
    msg: Claimed,
    person: Person,
    counts: Counts,
    now: datetime,
    previous: list[dict[str, Any]] | None,
) -> tuple[str, dict[str, Any] | None, tuple[Attachment, ...], str]:
    model = rt.model
    rows = digest_rows(
        model, rt.still_overdue(msg.units, msg.periods, msg.due_at, counts), counts, now
    )
    if not rows:
        return "digest", None, (), "submitted meanwhile"
    last = None if previous is None else digest_entries(previous)
    before = None if last is None else {f"{u}/{k}" for u, k in last}
    now_keys = {r["key"] for r in rows}
    resolved = digest_rows(
        model,
        [
            (u, k)
            for u, k in last or ()
            if f"{u}/{k}" not in now_keys and u in model.directory.units
        ],
        counts,
        now,
    )
    ctx = digest_context(model, person, rows, now, before, resolved)
    spec = model.schedule.campaign.digest
    if (
        spec.cadence_of(person.id) == "changes"
        and before is not None
        and not ctx["digest"]["new"]
        and not resolved
    ):
        return "digest", None, (), "unchanged since the last digest"
    if msg.channel != "email" or spec.attachment == "none":
        return "digest", ctx, (), ""
    stamp = now.astimezone(model.schedule.campaign.tz).strftime("%Y%m%d")
    att = (
        Attachment(f"逾期名单{stamp}.xlsx", digest_xlsx(rows), XLSX_MIME)
        if spec.attachment == "xlsx"
        else Attachment(f"逾期名单{stamp}.csv", digest_csv(rows), "text/csv")
    )
    return "digest", ctx, (att,), ""


def recheck_items(
    rt: Runtime, msg: Claimed, counts: Counts, now: datetime
) -> tuple[list[tuple[str, str, Occurrence]], str]:
    """The bundle's items that still have a reason, as (kind, unit, occurrence).

    An item is dropped when its unit submitted (quota minimum met), no longer owes the
    obligation or left the directory, or when it stopped making sense (its own expiry).
    The second value says why, when nothing is left.
    """
    model = rt.model
    items = msg.items or tuple(
        {"kind": msg.kind, "unit": u, "obligation": k.partition("@")[0],
         "period": k.partition("@")[2], "expires": None}
        for u in msg.units for k in msg.periods
    )  # fmt: skip
    out: list[tuple[str, str, Occurrence]] = []
    why: set[str] = set()
    for it in items:
        unit, kind = it["unit"], it["kind"]
        occ = model.occurrence(it["obligation"], it["period"])
        if occ is None or unit not in model.directory.units:
            why.add("no longer in the schedule or directory")
            continue
        if kind != "notice" and (
            counts.get((unit, occ.obligation, occ.period), 0) >= occ.quota_min
            or not model.owes(unit, occ.obligation)
        ):
            why.add("submitted meanwhile")
            continue
        expires = it.get("expires")
        if expires and now > datetime.fromisoformat(expires):
            why.add("expired")
            continue
        out.append((kind, unit, occ))
    return out, ", ".join(sorted(why))


def digest_entries(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(unit, occurrence key) pairs of a digest's stored items (one item per occurrence)."""
    return [
        (u, f"{it['obligation']}@{it['period']}")
        for it in items
        for u in it.get("units") or [it["unit"]]
    ]
