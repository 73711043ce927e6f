"""Calendar feeds (iCalendar): a unit's deadlines with its reminders as alarms, reachable
with the person's link token; the whole campaign for the office. Times carry the
campaign's zone (Asia/Shanghai) with a VTIMEZONE."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from icalendar import Alarm, Calendar, Event

from ..links import LinkError
from ..model import CampaignModel
from ..occurrences import Occurrence
from ..steps import Step
from .auth import Principal, open_page, page
from .state import state_of
from .views import render

router = APIRouter(include_in_schema=False)
log = structlog.get_logger("service.web")
_PRODID = "-//campaign-reminder-service//console//ZH"


def _calendar(name: str) -> Calendar:
    cal = Calendar()
    cal.add("prodid", _PRODID)
    cal.add("version", "2.0")
    cal.add("x-wr-calname", name)
    return cal


def _event(model: CampaignModel, occ: Occurrence, uid: str, description: str) -> Event:
    tz = model.schedule.campaign.tz
    ob = model.schedule.obligation(occ.obligation)
    event = Event()
    event.add("uid", uid)
    event.add("summary", f"截止：{ob.title}（{occ.period}）")
    event.add("dtstart", occ.due_at.astimezone(tz))
    event.add("dtend", occ.due_at.astimezone(tz))
    event.add("dtstamp", occ.due_at)
    shifted = f"（节假日调整，原定 {occ.nominal_date.isoformat()}）" if occ.shifted else ""
    event.add("description", f"{description}{shifted}\n报送方式：{ob.how_to_submit or ''}")
    return event


def _reminders(steps: list[Step], occ: Occurrence) -> list[timedelta]:
    return [
        s.moment - occ.due_at
        for s in steps
        if s.kind == "reminder" and occ in s.occurrences and s.notify == "liaison"
    ]


def _ics(cal: Calendar, filename: str) -> Response:
    cal.add_missing_timezones()
    return Response(
        cal.to_ical(),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


@router.get("/feeds/unit/{token}.ics")
async def unit_feed(
    request: Request, token: str, who: Annotated[Principal | None, Depends(open_page("link"))]
) -> Response:
    state = state_of(request)
    model = state.model
    try:
        claims = state.signer.verify(token, state.clock.now())
        person = state.runtime.person(claims.person)
        if person is None or person.role == "supervisor":
            raise LinkError("unknown")
        if claims.version != await state.accounts.link_version(person.id):
            raise LinkError("revoked")
    except LinkError as exc:
        log.warning("calendar feed link refused", reason=exc.reason)
        return render(request, "link_refused.html", status_code=403)
    unit = model.directory.units[person.unit]
    cal = _calendar(f"{unit.name} · {model.schedule.campaign.name}")
    steps = state.runtime.timeline.steps
    for occ in model.submittable():
        if not model.owes(unit.id, occ.obligation):
            continue
        event = _event(model, occ, f"{model.key}/{unit.id}/{occ.key}", f"{unit.name}应报送")
        for offset in _reminders(steps, occ):
            alarm = Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", "报送提醒")
            alarm.add("trigger", offset)
            event.add_component(alarm)
        cal.add_component(event)
    return _ics(cal, f"{unit.id}.ics")


@router.get("/feeds/campaign.ics")
async def campaign_feed(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    model = state_of(request).model
    cal = _calendar(model.schedule.campaign.name)
    for occ in model.submittable():
        owing = len(model.owers[occ.obligation])
        cal.add_component(_event(model, occ, f"{model.key}/{occ.key}", f"{owing} 个单位应报送"))
    return _ics(cal, f"{model.key}.ics")
