"""Office pages: a unit's state and audit trail (also for supervisors in scope), recording
and retracting submissions, the messages search and re-queue, accounts."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ..errors import LedgerError
from ..submissions import NewSubmission
from . import campaign, dashboard
from .auth import Principal, page, visible_units
from .security import csrf_ok
from .state import state_of
from .validation import form_int, form_text, form_time, submission_problems
from .views import (
    KIND_LABEL,
    MESSAGE_STATE,
    SOURCE_LABEL,
    STATE_LABEL,
    local,
    phone,
    render,
    status_rows,
    title_of,
)

router = APIRouter(include_in_schema=False)
router.include_router(dashboard.router)
router.include_router(campaign.router)
log = structlog.get_logger("service.web")


async def _checked_form(request: Request) -> Any:
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(403, "表单已过期，请刷新页面后重试。")
    return form


async def _unit_page(
    request: Request, who: Principal, unit_id: str, errors: dict[str, str], status_code: int = 200
) -> Response:
    state = state_of(request)
    unit = state.model.directory.units.get(unit_id)
    if unit is None:
        raise HTTPException(404, "没有这个单位。")
    now = state.clock.now()
    people = state.model.directory.people_by_unit.get(unit_id, [])
    subs, audit, messages = await state.queries.unit_view(unit_id, [p.id for p in people])
    rows = await status_rows(state, [unit_id], now, subs)
    visible = visible_units(request, who)
    return render(
        request,
        "unit.html",
        status_code=status_code,
        unit=unit,
        rows=rows,
        subs=subs,
        audit=audit,
        people=[(p, phone(p.mobile, visible is None or unit_id in visible)) for p in people],
        messages=messages,
        labels=STATE_LABEL,
        sources=SOURCE_LABEL,
        kinds=KIND_LABEL,
        mstates=MESSAGE_STATE,
        local=lambda t: local(t, state),
        title=lambda ob: title_of(state, ob),
        errors=errors,
        can_write=who.is_office,
        saved=request.query_params.get("saved"),
    )


@router.get("/units/{unit}")
async def unit_page(
    request: Request, unit: str, who: Annotated[Principal, Depends(page("unit"))]
) -> Response:
    return await _unit_page(request, who, unit, {})


@router.post("/units/{unit}/submissions")
async def record(
    request: Request, unit: str, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    form = await _checked_form(request)
    if unit not in state.model.directory.units:
        raise HTTPException(404, "没有这个单位。")
    errors: dict[str, str] = {}
    obligation, _, period = form_text(
        form, "occurrence", errors, required=True, limit=100
    ).partition("@")
    if "occurrence" in errors:
        errors["obligation"] = errors.pop("occurrence")
    count = form_int(form, "count", errors)
    note = form_text(form, "note", errors, required=False, limit=500)
    at = form_time(form, "at", errors, state.model.schedule.campaign.timezone)
    if not errors:
        errors = submission_problems(state.model, unit, obligation, period, count)
    if errors:
        return await _unit_page(request, who, unit, errors, status_code=400)
    sub = NewSubmission(unit, obligation, period, count, at or state.clock.now(), "admin", note)
    await state.ledger.record([sub], who.actor)
    return RedirectResponse(f"/units/{unit}?saved=recorded", status_code=303)


@router.post("/units/{unit}/retract")
async def retract(
    request: Request, unit: str, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    form = await _checked_form(request)
    errors: dict[str, str] = {}
    reason = form_text(form, "reason", errors, required=True, limit=500)
    raw_id = str(form.get("submission_id") or "")
    subs = {str(s["id"]): s for s in await state.queries.unit_submissions(unit)}
    target = subs.get(raw_id)
    if target is None or target["retracted_at"] is not None:
        errors["submission_id"] = "没有这条有效的报送记录"
    if errors or target is None:
        return await _unit_page(request, who, unit, errors, status_code=400)
    try:
        await state.ledger.retract(
            unit, target["obligation"], target["period"], who.actor, reason, int(raw_id)
        )
    except LedgerError:
        errors["submission_id"] = "没有这条有效的报送记录"
        return await _unit_page(request, who, unit, errors, status_code=400)
    return RedirectResponse(f"/units/{unit}?saved=retracted", status_code=303)


def _day(text: str | None, errors: dict[str, str], name: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(datetime.fromisoformat(text).date(), time(0))
    except ValueError:
        errors[name] = "日期格式应为 2023-06-21"
        return None


@router.get("/messages")
async def messages(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    q = request.query_params
    errors: dict[str, str] = {}
    directory = state.model.directory
    recipients: list[str] | None = None
    if unit := q.get("unit"):
        if unit not in directory.units:
            errors["unit"] = "没有这个单位"
        recipients = [p.id for p in directory.people_by_unit.get(unit, [])]
    if person := q.get("person"):
        if state.runtime.person(person) is None:
            errors["person"] = "没有这个人员"
        recipients = [person] if recipients is None else [r for r in recipients if r == person]
    status = q.get("status") or None
    if status and status not in MESSAGE_STATE:
        errors["status"] = "没有这种状态"
    tz = state.model.schedule.campaign.tz
    since, until = _day(q.get("since"), errors, "since"), _day(q.get("until"), errors, "until")
    rows: list[dict[str, Any]] = []
    if not errors:
        rows = await state.queries.search_messages(
            recipients=recipients,
            obligation=q.get("obligation") or None,
            status=status,
            since=since.replace(tzinfo=tz) if since else None,
            until=(until.replace(tzinfo=tz) + timedelta(days=1)) if until else None,
        )
    names = {p.id: p.name for p in directory.people}
    return render(
        request,
        "messages.html",
        status_code=400 if errors else 200,
        rows=rows,
        q=q,
        errors=errors,
        names=names,
        kinds=KIND_LABEL,
        mstates=MESSAGE_STATE,
        obligations=state.model.schedule.obligations,
        local=lambda t: local(t, state),
        requeued=q.get("requeued"),
    )


@router.get("/messages/{message_id}")
async def message(
    request: Request, message_id: int, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    row = await state.queries.message(message_id)
    if row is None:
        raise HTTPException(404, "没有这条消息。")
    person = state.runtime.person(row["recipient_id"])
    return render(
        request,
        "message.html",
        m=row,
        person=person,
        kinds=KIND_LABEL,
        mstates=MESSAGE_STATE,
        local=lambda t: local(t, state, seconds=True),
    )


@router.post("/messages/requeue")
async def requeue(request: Request, who: Annotated[Principal, Depends(page("office"))]) -> Response:
    state = state_of(request)
    form = await _checked_form(request)
    keys = [str(k) for k in form.getlist("key") if str(k)]
    if not keys:
        raise HTTPException(400, "输入有误：key：请至少选择一条失败的消息")
    n = await state.outbox.requeue(keys)
    log.info("messages re-queued", actor=who.actor, count=n)
    return RedirectResponse(f"/messages?status=pending&requeued={n}", status_code=303)


@router.get("/admin")
async def admin(request: Request, who: Annotated[Principal, Depends(page("admin"))]) -> Response:
    state = state_of(request)
    return render(
        request,
        "admin.html",
        users=await state.accounts.users(),
        tokens=await state.accounts.tokens(),
        done=request.query_params.get("done"),
        errors={},
    )


@router.post("/admin/links/revoke")
async def revoke_links(
    request: Request, who: Annotated[Principal, Depends(page("admin"))]
) -> Response:
    state = state_of(request)
    form = await _checked_form(request)
    person = str(form.get("person") or "").strip()
    if state.runtime.person(person) is None:
        return render(
            request,
            "admin.html",
            status_code=400,
            users=await state.accounts.users(),
            tokens=await state.accounts.tokens(),
            done=None,
            errors={"person": "没有这个人员"},
        )
    await state.accounts.revoke_links(person)
    log.info("personal links revoked", person=person, actor=who.actor)
    return RedirectResponse("/admin?done=link", status_code=303)


@router.post("/admin/tokens/revoke")
async def revoke_token(
    request: Request, who: Annotated[Principal, Depends(page("admin"))]
) -> Response:
    state = state_of(request)
    form = await _checked_form(request)
    raw = str(form.get("token_id") or "")
    if not raw.isdigit() or not await state.accounts.revoke_token(int(raw)):
        raise HTTPException(400, "输入有误：token_id：没有这个有效的令牌")
    return RedirectResponse("/admin?done=token", status_code=303)
