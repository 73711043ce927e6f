"""The campaign dashboard: per obligation and period — owing, on time, late, outstanding,
overdue — with filters by region and unit kind, drill-down lists and a submissions chart."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from ..directory import UNIT_KINDS, Unit
from ..model import CampaignModel
from ..status import open_occurrences
from .auth import Principal, page
from .state import WebState, state_of
from .views import STATE_LABEL, local, render, status_rows

router = APIRouter(include_in_schema=False)
KIND_NAMES = {
    "province": "省级",
    "region": "市州",
    "county": "县区",
    "department": "省直部门",
    "enterprise": "中省属企业",
    "office": "办公室",
}


@dataclass
class Tally:
    obligation: str
    period: str
    title: str
    due: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def owing(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.counts["done"] + self.counts["late"]


def _filtered_units(state: WebState, region: str | None, kind: str | None) -> set[str] | None:
    directory = state.model.directory
    if region and region not in directory.units:
        raise HTTPException(400, "输入有误：region：没有这个地区")
    if kind and kind not in UNIT_KINDS:
        raise HTTPException(400, "输入有误：kind：没有这种单位类型")
    units: set[str] | None = set(directory.subtree(region)) if region else None
    if kind:
        of_kind = {u.id for u in directory.units.values() if u.kind == kind}
        units = of_kind if units is None else units & of_kind
    return units


def _regions(model: CampaignModel) -> list[Unit]:
    return [u for u in model.directory.units.values() if u.kind == "region"]


def chart(per_day: dict[date, int]) -> dict[str, object]:
    """An SVG polyline of cumulative submissions per day (drawn server-side, no script)."""
    width, height, pad = 640, 160, 24
    if not per_day:
        return {"points": "", "width": width, "height": height, "labels": [], "total": 0}
    days = sorted(per_day)
    first, last = days[0], days[-1]
    span = max((last - first).days, 1)
    total, points = 0, []
    for day in days:
        total += per_day[day]
        points.append((day, total))
    coords = [
        (
            pad + (width - 2 * pad) * (day - first).days / span,
            height - pad - (height - 2 * pad) * n / total,
        )
        for day, n in points
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return {
        "points": path,
        "width": width,
        "height": height,
        "labels": [first.isoformat(), last.isoformat()],
        "total": total,
    }


@router.get("/dashboard")
async def dashboard(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    state = state_of(request)
    region = request.query_params.get("region") or None
    kind = request.query_params.get("kind") or None
    units = _filtered_units(state, region, kind)
    now = state.clock.now()
    model = state.model
    occurrences = open_occurrences(model, now)
    tallies: dict[str, Tally] = {
        occ.key: Tally(
            occ.obligation,
            occ.period,
            model.schedule.obligation(occ.obligation).title,
            local(occ.due_at, state),
        )
        for occ in occurrences
    }
    tz = model.schedule.campaign.tz
    if units is None:  # the whole campaign: aggregated in SQL (see ConsoleQueries)
        # two statements on two connections at once: the server time is the longer one
        sums, per_day = await asyncio.gather(
            state.queries.occurrence_tallies(
                [(o.obligation, o.period, o.due_at, o.quota_min) for o in occurrences], now
            ),
            state.queries.submissions_per_day(now, tz),
        )
        for occ in occurrences:
            done, on_time = sums.get((occ.obligation, occ.period), (0, 0))
            counts = tallies[occ.key].counts
            counts["done"], counts["late"] = on_time, done - on_time
            rest = len(model.owers[occ.obligation]) - done
            counts["overdue" if now > occ.due_at else "outstanding"] = rest
    else:
        for st, key in await status_rows(state, units, now):
            tallies[st.occurrence.key].counts[key] += 1
        dated = await state.queries.dated_counts(sorted(units))
        per_day = Counter(r[4].astimezone(tz).date() for r in dated if r[4] <= now)
    regions = state.derived("regions", _regions)
    return render(
        request,
        "dashboard.html",
        tallies=[t for t in tallies.values() if t.owing],
        region=region,
        kind=kind,
        regions=regions,
        kinds=KIND_NAMES,
        chart=chart(per_day),
        now=local(now, state),
        labels=STATE_LABEL,
    )


@router.get("/dashboard/units")
async def drill_down(
    request: Request, who: Annotated[Principal, Depends(page("office"))]
) -> Response:
    """The units behind one number of the dashboard."""
    state = state_of(request)
    q = request.query_params
    region, kind, wanted = q.get("region") or None, q.get("kind") or None, q.get("state") or None
    occ = state.model.occurrence(q.get("obligation", ""), q.get("period", ""))
    if occ is None:
        raise HTTPException(404, "没有这个报送事项或周期。")
    if wanted is not None and wanted not in STATE_LABEL:
        raise HTTPException(400, "输入有误：state：没有这种状态")
    units = _filtered_units(state, region, kind)
    rows = [
        (st, key)
        for st, key in await status_rows(state, units, state.clock.now())
        if st.occurrence.key == occ.key and (wanted is None or key == wanted)
    ]
    return render(
        request,
        "drill.html",
        occ=occ,
        title=state.model.schedule.obligation(occ.obligation).title,
        rows=rows,
        units=state.model.directory.units,
        wanted=wanted,
        labels=STATE_LABEL,
        due=local(occ.due_at, state),
    )
