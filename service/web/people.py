"""Pages for people outside the office: sign-in, personal links, the liaison's own page,
the supervisor's overdue list with exports."""

from __future__ import annotations

from datetime import timedelta
from pathlib import PurePath
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from .. import render as payloads
from ..errors import LedgerError
from ..intake.core import Hints, Outcome, intake_file
from ..intake.read import MAX_FILE_BYTES, FormError
from ..links import LinkError, feed_url
from ..sheets import Sheet, csv_bytes, xlsx_bytes
from ..status import overdue_in_scope
from ..submissions import NewSubmission
from .auth import Principal, open_page, page, visible_units
from .security import csrf_ok, verify_password
from .state import state_of
from .validation import form_int, form_text, submission_problems
from .views import (
    KIND_LABEL,
    MESSAGE_STATE,
    STATE_LABEL,
    local,
    phone,
    render,
    status_rows,
    title_of,
)

router = APIRouter(include_in_schema=False)
log = structlog.get_logger("service.web")


def home_of(who: Principal) -> str:
    if who.is_office:
        return "/dashboard"
    return "/overdue" if who.role == "supervisor" else "/me"


@router.get("/")
async def root(
    request: Request, who: Annotated[Principal | None, Depends(open_page("public"))]
) -> Response:
    if who is None:
        return render(request, "login.html", errors={}, username="")
    return RedirectResponse(home_of(who), status_code=303)


@router.get("/login")
async def login_form(
    request: Request, who: Annotated[Principal | None, Depends(open_page("public"))]
) -> Response:
    return render(request, "login.html", errors={}, username="")


@router.post("/login")
async def login(
    request: Request, who: Annotated[Principal | None, Depends(open_page("public"))]
) -> Response:
    state = state_of(request)
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(403, "表单已过期，请刷新页面后重试。")
    errors: dict[str, str] = {}
    name = form_text(form, "name", errors, required=True, limit=64)
    password = str(form.get("password") or "")
    if not password:
        errors["password"] = "必填"
    if errors:
        return render(request, "login.html", status_code=400, errors=errors, username=name)
    if await state.accounts.locked_until(name) is not None:
        log.warning("login refused: throttled", user=name)
        errors["password"] = "尝试次数过多，请稍后再试。"
        return render(request, "login.html", status_code=429, errors=errors, username=name)
    user = await state.accounts.user(name)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        web = state.web
        await state.accounts.login_failed(name, web.login_limit, web.login_window, web.login_lock)
        log.warning("login failed", user=name)
        errors["password"] = "用户名或密码错误"
        return render(request, "login.html", status_code=401, errors=errors, username=name)
    await state.accounts.login_succeeded(name)
    request.session.clear()  # a fresh session (and CSRF token) on every sign-in
    request.session["u"] = user.name
    log.info("login", user=user.name, role=user.role)
    target = home_of(Principal(user.role, user.name, user.scope, "session"))  # type: ignore[arg-type]
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(
    request: Request, who: Annotated[Principal | None, Depends(open_page("public"))]
) -> Response:
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(403, "表单已过期，请刷新页面后重试。")
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@router.get("/l/{token}")
async def personal_link(
    request: Request, token: str, who: Annotated[Principal | None, Depends(open_page("link"))]
) -> Response:
    """A personal link: verified, then exchanged for a session (the token leaves the URL)."""
    state = state_of(request)
    try:
        claims = state.signer.verify(token, state.clock.now())
        person = state.runtime.person(claims.person)
        if person is None:
            raise LinkError("unknown")
        if claims.version != await state.accounts.link_version(person.id):
            raise LinkError("revoked")
    except LinkError as exc:
        log.warning("personal link refused", reason=exc.reason)
        return render(request, "link_refused.html", status_code=403)
    request.session.clear()
    request.session.update({"p": person.id, "v": claims.version})
    log.info("personal link used", person=person.id)
    target = "/overdue" if person.role == "supervisor" else "/me"
    return RedirectResponse(target, status_code=303)


async def _liaison_page(
    request: Request,
    who: Principal,
    errors: dict[str, str],
    status_code: int = 200,
    uploaded: list[dict[str, str]] | None = None,
) -> Response:
    state = state_of(request)
    assert who.scope is not None
    unit = state.model.directory.units[who.scope]
    now = state.clock.now()
    # up to now: a console on a frozen demo clock must not show later reminders
    all_subs, messages = await state.queries.liaison_view(
        unit.id, who.name, until=now + timedelta(seconds=1), limit=10
    )
    rows = await status_rows(state, [unit.id], now, all_subs)
    owed = [(st, key) for st, key in rows if st.state != "done"]
    done = [(st, key) for st, key in rows if st.state == "done"]
    version = int(request.session.get("v", 1))  # checked against the store just now
    feed = feed_url(state.signer.issue(who.name, version, now), base=str(request.base_url)[:-1])
    subs = [s for s in all_subs if s["source"] == "liaison-link" and s["recorded_by"] == who.actor][
        :10
    ]
    return render(
        request,
        "liaison.html",
        status_code=status_code,
        unit=unit,
        person=state.runtime.person(who.name),
        owed=owed,
        done=done,
        labels=STATE_LABEL,
        messages=messages,
        kinds=KIND_LABEL,
        mstates=MESSAGE_STATE,
        local=lambda t: local(t, state),
        title=lambda ob: title_of(state, ob),
        feed=feed,
        subs=subs,
        errors=errors,
        saved=request.query_params.get("saved") == "1",
        uploaded=uploaded,
        upload_limit_mb=MAX_FILE_BYTES // 2**20,
        contact=state.model.schedule.campaign.contact,
    )


@router.get("/me")
async def liaison(request: Request, who: Annotated[Principal, Depends(page("person"))]) -> Response:
    uploaded = request.session.pop(_UPLOADED, None)  # shown once, after the redirect
    return await _liaison_page(
        request, who, {}, uploaded=uploaded if isinstance(uploaded, list) else None
    )


_UPLOADED = "uploaded"  # session key: the last upload's outcome, for the page after redirect
_UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the small fields
_UPLOAD_WORDS = {
    "recorded": "已登记",
    "duplicate": "已登记过",
    "review": "已转办公室审核",
    "refused": "未登记",
}


def _upload_result(request: Request, outcomes: list[Outcome] | str) -> Response:
    """Keep the outcome (Chinese, short) in the session and show it on /me after redirect."""
    if isinstance(outcomes, str):
        shown = [{"status": "refused", "label": _UPLOAD_WORDS["refused"], "message": outcomes}]
    else:
        shown = [
            {"status": o.status, "label": _UPLOAD_WORDS[o.status], "message": o.message}
            for o in outcomes
        ]
    for item in shown:  # the session is a cookie: keep it well under 4 KB
        item["message"] = item["message"][:300]
    request.session[_UPLOADED] = shown[:3]
    return RedirectResponse("/me#upload-result", status_code=303)


@router.post("/me/uploads")
async def liaison_upload(
    request: Request, who: Annotated[Principal, Depends(page("person"))]
) -> Response:
    """上传: a filled form for the person's own unit, through the same intake as the CLI
    (source upload). The unit is the link's, never the form's; nothing is written when the
    file is refused."""
    state = state_of(request)
    assert who.scope is not None
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "上传请求缺少长度信息，请使用浏览器的上传按钮。")
    if int(length) > MAX_FILE_BYTES + _UPLOAD_OVERHEAD:  # refused before anything is spooled
        raise HTTPException(413, f"文件大于 {MAX_FILE_BYTES // 2**20} MB，不像是填好的表格。")
    async with request.form(max_files=1, max_fields=10) as form:
        if not csrf_ok(request, form.get("csrf")):
            raise HTTPException(403, "表单已过期，请刷新页面后重试。")
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return _upload_result(request, "请先选择要上传的表格文件。")
        data = await upload.read(MAX_FILE_BYTES + 1)  # read_grids refuses one byte more
        name = PurePath(upload.filename.replace("\\", "/")).name[:200] or "upload"
        errors: dict[str, str] = {}
        obligation = form_text(form, "obligation", errors, required=False, limit=64) or None
        period = form_text(form, "period", errors, required=False, limit=32) or None
    if name.lower().endswith(".eml"):
        return _upload_result(
            request, f"{name}：请上传填好的表格文件（.xlsx 或 .csv），不要上传邮件。"
        )
    if obligation and period and not errors:
        errors = submission_problems(state.model, who.scope, obligation, period, 1)
    if errors:
        return _upload_result(request, "；".join(errors.values()))
    try:
        outcomes = await intake_file(
            state.model,
            state.engine,
            state.clock,
            state.settings.state_dir,
            name,
            data,
            hints=Hints(unit=who.scope, obligation=obligation, period=period),
            actor=who.actor,
        )
    except (FormError, LedgerError) as exc:
        log.info("liaison upload refused", person=who.name)
        return _upload_result(request, str(exc))
    log.info("liaison upload", person=who.name, outcomes=[o.status for o in outcomes])
    return _upload_result(request, outcomes)


@router.post("/me/submissions")
async def liaison_submit(
    request: Request, who: Annotated[Principal, Depends(page("person"))]
) -> Response:
    """已报送: the liaison records a submission for their own unit (source liaison-link)."""
    state = state_of(request)
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(403, "表单已过期，请刷新页面后重试。")
    assert who.scope is not None
    errors: dict[str, str] = {}
    obligation = form_text(form, "obligation", errors, required=True, limit=64)
    period = form_text(form, "period", errors, required=True, limit=32)
    count = form_int(form, "count", errors)
    note = form_text(form, "note", errors, required=False, limit=500)
    if not errors:
        errors = submission_problems(state.model, who.scope, obligation, period, count)
    if not errors:
        occ = state.model.occurrence(obligation, period)
        if occ is None or occ.opens_at > state.clock.now():
            errors["period"] = "该周期尚未开始"
    if errors:
        return await _liaison_page(request, who, errors, status_code=400)
    sub = NewSubmission(
        who.scope, obligation, period, count, state.clock.now(), "liaison-link", note
    )
    await state.ledger.record([sub], who.actor)
    log.info("liaison submission", person=who.name, occurrence=f"{obligation}@{period}")
    return RedirectResponse("/me?saved=1", status_code=303)


async def _overdue(request: Request, who: Principal) -> tuple[str | None, dict[str, object]]:
    state = state_of(request)
    scope = request.query_params.get("scope") or (None if who.is_office else who.scope)
    if scope is not None and scope not in state.model.directory.units:
        raise HTTPException(404, "没有这个单位。")
    now = state.clock.now()
    counts = await state.ledger.count_table(state.runtime.unit_index, as_of=now)
    grouped = overdue_in_scope(state.model, counts, now, scope)
    return scope, payloads.overdue_payload(state.model, grouped, now, scope)


def _liaison_of(request: Request, who: Principal, unit: str) -> tuple[str, str]:
    state = state_of(request)
    people = state.model.directory.people_of(unit, "liaison")
    if not people:
        return "（无联络员）", "—"
    visible = visible_units(request, who)
    person = people[0]
    return person.name, phone(person.mobile, visible is None or unit in visible)


@router.get("/overdue")
async def overdue(request: Request, who: Annotated[Principal, Depends(page("scope"))]) -> Response:
    state = state_of(request)
    scope, payload = await _overdue(request, who)
    liaisons = {
        u["unit"]: _liaison_of(request, who, u["unit"])
        for g in payload["obligations"]  # type: ignore[attr-defined]
        for u in g["units"]
    }
    scope_name = state.model.directory.units[scope].name if scope else "全省"
    return render(
        request,
        "overdue.html",
        payload=payload,
        liaisons=liaisons,
        scope=scope,
        scope_name=scope_name,
    )


def _export_rows(
    request: Request, who: Principal, payload: dict[str, object]
) -> list[list[object]]:
    rows: list[list[object]] = []
    for group in payload["obligations"]:  # type: ignore[attr-defined]
        for u in group["units"]:
            name, mobile = _liaison_of(request, who, u["unit"])
            rows.append(
                [
                    group["title"],
                    u["unit_name"],
                    u["period"],
                    u["due"],
                    u["count"],
                    u["min"],
                    u["days_late"],
                    name,
                    mobile,
                ]
            )
    return rows


_EXPORT_HEADER = ["事项", "单位", "周期", "截止时间", "已报", "最低", "逾期天数", "联络员", "电话"]


@router.get("/overdue.csv")
async def overdue_csv(
    request: Request, who: Annotated[Principal, Depends(page("scope"))]
) -> Response:
    scope, payload = await _overdue(request, who)
    body = csv_bytes(_EXPORT_HEADER, _export_rows(request, who, payload))  # type: ignore[arg-type]
    return _download(body, f"overdue-{scope or 'all'}.csv", "text/csv; charset=utf-8")


@router.get("/overdue.xlsx")
async def overdue_xlsx(
    request: Request, who: Annotated[Principal, Depends(page("scope"))]
) -> Response:
    scope, payload = await _overdue(request, who)
    sheet = Sheet("逾期单位", _EXPORT_HEADER, _export_rows(request, who, payload))  # type: ignore[arg-type]
    body = xlsx_bytes([sheet])
    mime = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return _download(body, f"overdue-{scope or 'all'}.xlsx", mime)


def _download(body: bytes, filename: str, mime: str) -> Response:
    return Response(
        body, media_type=mime, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
