"""Office pages about the campaign itself: what the next cycle will send and why, the
directory with its validation warnings, and the calendar of occurrences."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .auth import Principal, page
from .state import state_of
from .views import KIND_LABEL, local, render, title_of

router = APIRouter(include_in_schema=False)
_WHY = {
    "reminder": "截止前提醒：尚未报送",
    "overdue": "逾期提醒：已过截止时间仍未报送",
    "escalation": "督办：逾期后通知单位负责人",
    "digest": "逾期汇总：辖区内有逾期单位",
    "notice": "活动通知",
}


@router.get("/preview")
async def preview(request: Request, who: Annotated[Principal, Depends(page("office"))]) -> Response:
    """The planner's answer for the next due moment (nothing is written or sent)."""
    state = state_of(request)
    now = state.clock.now()
    nxt = state.runtime.timeline.next_moment(now)
    rows = []
    if nxt is not None:
        counts = await state.ledger.count_table(state.runtime.unit_index, as_of=now)
        plan = state.runtime.planner.plan(counts, now, nxt)
        names = {p.id: p.name for p in state.model.directory.people}
        rows = [
            {
                "at": local(m.next_attempt_at, state),
                "kind": KIND_LABEL.get(m.kind, m.kind),
                "channel": m.channel,
                "recipient": names.get(m.recipient_id, m.recipient_id),
                "title": title_of(state, m.obligation),
                "periods": "、".join(m.periods),
                "units": len(m.units),
                "why": m.reason or _WHY.get(m.kind, m.step),
            }
            for m in plan.messages
        ]
    return render(request, "preview.html", rows=rows, next=local(nxt, state) if nxt else None)


@router.get("/directory")
async def directory(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    model = state_of(request).model
    d = model.directory
    return render(
        request,
        "directory.html",
        units=list(d.units.values()),
        people=d.people_by_unit,
        warnings=model.warnings(),
    )


@router.get("/calendar")
async def calendar(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    model = state.model
    rows = [
        {
            "title": title_of(state, o.obligation),
            "period": o.period,
            "kind": o.kind,
            "due": local(o.due_at, state),
            "nominal": o.nominal_date.isoformat() if o.shifted else "",
            "owing": len(model.owers[o.obligation]),
            "quota": f"{o.quota_min}/{o.quota_goal}" if o.kind != "event" else "—",
        }
        for o in model.occurrences
    ]
    return render(request, "calendar.html", rows=rows)
