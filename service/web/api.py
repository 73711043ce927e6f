"""JSON API under /api/v1 (Bearer tokens). Reads answer the shapes of ``service status
--json`` and ``service overdue --json``; writes are idempotent with a client-supplied key."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import render as payloads
from ..errors import LedgerError
from ..status import compute_status, overdue_in_scope
from ..submissions import MAX_COUNT, NewSubmission
from .auth import Principal, caller, visible_units
from .state import WebState, state_of
from .validation import FIELD_LABEL, submission_problems

router = APIRouter(prefix="/api/v1", tags=["v1"])
KEY_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"


class SubmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(pattern=KEY_PATTERN, description="幂等键：重复请求返回首次结果")]
    unit: Annotated[str, Field(min_length=1, max_length=64)]
    obligation: Annotated[str, Field(min_length=1, max_length=64)]
    period: Annotated[str, Field(min_length=1, max_length=32)]
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    at: datetime | None = Field(
        default=None, description="报送时间（ISO 8601，带时区）；默认为现在"
    )
    note: Annotated[str, Field(max_length=500)] = ""


class RetractIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(pattern=KEY_PATTERN)]
    unit: Annotated[str, Field(min_length=1, max_length=64)]
    obligation: Annotated[str, Field(min_length=1, max_length=64)]
    period: Annotated[str, Field(min_length=1, max_length=32)]
    submission_id: int | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _moment(state: WebState, at: str | None) -> datetime:
    if at is None:
        return state.clock.now()
    from ..submissions import parse_time

    try:
        return parse_time(at, state.model.schedule.campaign.timezone)
    except ValueError:
        raise HTTPException(
            422, {"errors": [{"field": "at", "message": "不是合法的 ISO 8601 时间"}]}
        ) from None


@router.get("/status", summary="各单位各事项的完成情况（同 service status --json）")
async def status(
    request: Request,
    who: Annotated[Principal, Depends(caller("unit"))],
    unit: Annotated[str | None, Query(max_length=64)] = None,
    at: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    state = state_of(request)
    if unit is not None and unit not in state.model.directory.units:
        raise HTTPException(404, "没有这个单位")
    moment = _moment(state, at)
    visible = visible_units(request, who)
    units = [unit] if unit else (sorted(visible) if visible is not None else None)
    counts = await state.ledger.count_table(state.runtime.unit_index, as_of=moment)
    rows = compute_status(state.model, counts, moment, units)
    return payloads.status_payload(state.model, rows, moment)


@router.get("/overdue", summary="监管范围内的逾期单位（同 service overdue --json）")
async def overdue(
    request: Request,
    who: Annotated[Principal, Depends(caller("scope"))],
    scope: Annotated[str | None, Query(max_length=64)] = None,
    at: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    state = state_of(request)
    scope = scope or (None if who.is_office else who.scope)
    if scope is not None and scope not in state.model.directory.units:
        raise HTTPException(404, "没有这个单位")
    moment = _moment(state, at)
    counts = await state.ledger.count_table(state.runtime.unit_index, as_of=moment)
    grouped = overdue_in_scope(state.model, counts, moment, scope)
    return payloads.overdue_payload(state.model, grouped, moment, scope)


def _fingerprint(body: BaseModel) -> str:
    text = json.dumps(body.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _field_errors(problems: dict[str, str]) -> list[dict[str, str]]:
    return [{"field": f, "message": f"{FIELD_LABEL.get(f, f)}：{m}"} for f, m in problems.items()]


async def _idempotent(
    state: WebState, who: Principal, action: str, body: BaseModel, key: str, write: Any
) -> JSONResponse:
    """Run ``write`` once per (caller, key); a repeat answers the first answer again."""
    fingerprint = _fingerprint(body)
    earlier = await state.accounts.reserve_request(who.actor, key, action, fingerprint)
    if earlier is not None:
        if earlier.fingerprint != fingerprint or earlier.action != action:
            raise HTTPException(409, "该幂等键已用于另一个请求")
        if earlier.status == 0:
            raise HTTPException(409, "同一幂等键的请求正在处理，请稍后重试")
        return JSONResponse(
            earlier.response, status_code=earlier.status, headers={"Idempotent-Replayed": "true"}
        )
    try:
        status_code, response = await write()
    except BaseException:
        await state.accounts.release_request(who.actor, key)
        raise
    if status_code >= 400:  # nothing written: a corrected request may reuse the key
        await state.accounts.release_request(who.actor, key)
    else:
        await state.accounts.complete_request(who.actor, key, status_code, response)
    return JSONResponse(response, status_code=status_code)


@router.post("/submissions", status_code=201, summary="登记一次报送（幂等）")
async def record(
    request: Request, body: SubmissionIn, who: Annotated[Principal, Depends(caller("office"))]
) -> JSONResponse:
    state = state_of(request)

    async def write() -> tuple[int, dict[str, Any]]:
        problems = submission_problems(
            state.model, body.unit, body.obligation, body.period, body.count
        )
        if body.at is not None and body.at.tzinfo is None:
            problems["at"] = "时间须带时区"
        if problems:
            return 422, {"detail": "输入有误", "errors": _field_errors(problems)}
        at = body.at or state.clock.now()
        sub = NewSubmission(
            body.unit, body.obligation, body.period, body.count, at, "admin", body.note
        )
        ids = await state.ledger.record([sub], who.actor)
        return 201, {
            "id": ids[0],
            "unit": body.unit,
            "obligation": body.obligation,
            "period": body.period,
            "count": body.count,
            "at": payloads.iso_local(at, state.model),
        }

    return await _idempotent(state, who, "record", body, body.key, write)


@router.post("/submissions/retract", summary="撤销报送（幂等）")
async def retract(
    request: Request, body: RetractIn, who: Annotated[Principal, Depends(caller("office"))]
) -> JSONResponse:
    state = state_of(request)

    async def write() -> tuple[int, dict[str, Any]]:
        problems = submission_problems(state.model, body.unit, body.obligation, body.period, 1)
        if problems:
            return 422, {"detail": "输入有误", "errors": _field_errors(problems)}
        try:
            ids = await state.ledger.retract(
                body.unit, body.obligation, body.period, who.actor, body.reason, body.submission_id
            )
        except LedgerError:
            field = "submission_id" if body.submission_id is not None else "period"
            return 404, {
                "detail": "没有可撤销的报送",
                "errors": [{"field": field, "message": "没有有效的报送记录"}],
            }
        return 200, {"retracted": ids}

    return await _idempotent(state, who, "retract", body, body.key, write)
