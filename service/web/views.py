"""Helpers shared by the page modules: rendering, local times, state rows, masking."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..channels.base import mask_address
from ..status import UnitStatus, compute_status
from ..timeliness import completion_moments
from .security import csrf_token
from .state import WebState, state_of

STATE_LABEL = {"done": "已完成", "late": "补报", "outstanding": "待报送", "overdue": "逾期"}
MESSAGE_STATE = {
    "pending": "待发送",
    "sending": "发送中",
    "sent": "已发送",
    "cancelled": "已取消",
    "stale": "已过时",
    "failed": "失败",
}
KIND_LABEL = {
    "reminder": "截止前提醒",
    "overdue": "逾期提醒",
    "escalation": "督办",
    "digest": "逾期汇总",
    "notice": "活动通知",
}
SOURCE_LABEL = {
    "admin": "办公室登记",
    "liaison-link": "联络员链接",
    "import": "批量导入",
    "inbound-mail": "邮件报送",
}


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    state = state_of(request)
    context.setdefault("who", getattr(request.state, "principal", None))
    context["csrf"] = csrf_token(request)
    context["campaign"] = state.model.schedule.campaign
    context["channel_label"] = CHANNEL_LABEL
    context["occ_label"] = lambda key: occurrence_label(state, key)
    context["ob_title"] = lambda key: title_of(state, key) if key else ""
    return state.templates.TemplateResponse(request, name, context, status_code=status_code)


CHANNEL_LABEL = {"email": "邮件", "sms": "短信"}


def occurrence_label(state: WebState, key: str) -> str:
    """``weekly-progress@2023-W25`` as people read it: the obligation's title and period."""
    obligation, sep, period = key.partition("@")
    if not sep:
        return key
    return f"{title_of(state, obligation)}（{period}）"


def local(moment: datetime | None, state: WebState, seconds: bool = False) -> str:
    if moment is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return moment.astimezone(state.model.schedule.campaign.tz).strftime(fmt)


def phone(number: str | None, visible: bool) -> str:
    """A phone number in full only for someone whose scope holds its owner."""
    if not number:
        return "—"
    return number if visible else mask_address(number)


def title_of(state: WebState, obligation: str | None) -> str:
    if obligation is None:
        return "（汇总）"
    try:
        return state.model.schedule.obligation(obligation).title
    except KeyError:
        return obligation


async def status_rows(
    state: WebState,
    units: Iterable[str] | None,
    at: datetime,
    subs: list[dict[str, Any]] | None = None,
) -> list[tuple[UnitStatus, str]]:
    """compute_status for ``units`` (None: all) with each row's state label key, where a
    done occurrence whose quota was met after its due moment is "late" (补报).

    ``subs``: the unit's submission rows when the caller has them already (one unit's
    page): counts and completion moments then come from them, not two more queries.
    """
    wanted = None if units is None else list(units)
    if subs is not None:
        active = sorted(
            (
                (r["unit_id"], r["obligation"], r["period"], int(r["count"]), r["submitted_at"])
                for r in subs
                if r["retracted_at"] is None and r["submitted_at"] <= at
            ),
            key=lambda r: r[4],
        )
        counts: Any = {}
        for unit, obligation, period, count, _ in active:
            counts[(unit, obligation, period)] = counts.get((unit, obligation, period), 0) + count
        dated = active
    else:
        if wanted is not None and len(wanted) <= 500:
            counts = await state.ledger.counts_for(wanted, as_of=at)
        else:
            counts = await state.ledger.count_table(state.runtime.unit_index, as_of=at)
        small = wanted if wanted and len(wanted) <= 500 else None
        dated = [r for r in await state.queries.dated_counts(small) if r[4] <= at]
    rows = compute_status(state.model, counts, at, wanted)
    moments = completion_moments(state.model, dated)
    out: list[tuple[UnitStatus, str]] = []
    for st in rows:
        key: str = st.state
        if st.state == "done":
            done_at = moments.get((st.unit, st.occurrence.obligation, st.occurrence.period))
            if done_at is not None and done_at > st.occurrence.due_at:
                key = "late"
        out.append((st, key))
    return out
