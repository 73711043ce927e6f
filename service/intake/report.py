"""附件2 summed up: per unit, per region and for the province, with who is missing.

The latest recorded file of each unit counts (a corrected resend replaces the first).
Values that cannot be added (negative, not a number) are listed, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import LedgerError
from ..model import CampaignModel
from ..schedule import FormField
from ..sheets import Cell, Sheet, xlsx_bytes
from .forms import form_of
from .store import IntakeStore

OTHERS = "省直部门及其他单位"


@dataclass
class UnitLine:
    unit: str
    name: str
    region: str
    received_at: datetime | None = None
    filename: str = ""
    values: dict[str, int] = field(default_factory=dict)

    @property
    def reported(self) -> bool:
        return self.received_at is not None


@dataclass
class Report:
    obligation: str
    period: str
    scope: str
    fields: list[FormField]
    lines: list[UnitLine]
    problems: list[tuple[str, str, str]]  # unit name, file, problem

    def totals(self, lines: list[UnitLine]) -> dict[str, int]:
        return {f.key: sum(line.values.get(f.key, 0) for line in lines) for f in self.fields}

    def regions(self) -> list[tuple[str, list[UnitLine]]]:
        groups: dict[str, list[UnitLine]] = {}
        for line in self.lines:
            groups.setdefault(line.region, []).append(line)
        return list(groups.items())

    @property
    def missing(self) -> list[UnitLine]:
        return [line for line in self.lines if not line.reported]


def _region(model: CampaignModel, unit: str) -> str:
    units = model.directory.units
    cur: str | None = unit
    while cur is not None and cur in units:
        if units[cur].kind == "region":
            return units[cur].name
        cur = units[cur].parent
    return OTHERS


async def build_report(
    model: CampaignModel,
    store: IntakeStore,
    active: dict[tuple[str, str, str], int],
    obligation: str,
    period: str,
    scope: str | None = None,
) -> Report:
    """``active``: the ledger's counts (retracted submissions do not count)."""
    try:
        ob = model.schedule.obligation(obligation)
    except KeyError:
        raise LedgerError(f"obligation: unknown obligation {obligation!r}") from None
    form = form_of(ob)
    if form is None:
        raise LedgerError(f"obligation: {obligation!r} has no form to sum up")
    if model.occurrence(obligation, period) is None:
        raise LedgerError(f"period: {obligation!r} has no period {period!r}")
    units = model.directory.units
    root = scope or next(u.id for u in units.values() if u.parent is None)
    if root not in units:
        raise LedgerError(f"scope: unknown unit {root!r}")
    in_scope = set(model.directory.subtree(root))
    numeric = [f for f in form.fields if f.type == "integer"]
    lines = {
        uid: UnitLine(uid, units[uid].name, _region(model, uid))
        for uid in model.owers[obligation]
        if uid in in_scope
    }
    problems: list[tuple[str, str, str]] = []
    for ev in await store.for_occurrence(obligation, period):  # oldest first: last one wins
        by_unit: dict[str, list[dict[str, Any]]] = {}
        for row in ev.rows:
            uid = row.get("unit") or ev.unit_id
            if uid in lines and active.get((uid, obligation, period), 0) > 0:
                by_unit.setdefault(uid, []).append(row)
        for uid, rows in by_unit.items():
            line = lines[uid]
            line.received_at, line.filename, line.values = ev.received_at, ev.filename, {}
            problems = [p for p in problems if p[0] != line.name]  # superseded by the resend
            for row in rows:
                for f in numeric:
                    value = row["values"].get(f.key)
                    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                        line.values[f.key] = line.values.get(f.key, 0) + value
                problems += [(line.name, ev.filename, p) for p in row.get("problems", [])]
    return Report(obligation, period, root, numeric, list(lines.values()), problems)


def report_xlsx(report: Report, model: CampaignModel) -> bytes:
    labels = [f.label + (f"（{f.unit}）" if f.unit else "") for f in report.fields]
    summary: list[list[Cell]] = []
    for region, lines in report.regions():
        done = [x for x in lines if x.reported]
        totals = report.totals(done)
        summary.append([region, len(done), len(lines), *(totals[f.key] for f in report.fields)])
    done_all = [x for x in report.lines if x.reported]
    everything = report.totals(done_all)
    summary.append(
        ["合计", len(done_all), len(report.lines), *(everything[f.key] for f in report.fields)]
    )
    tz = model.schedule.campaign.tz
    detail: list[list[Cell]] = [
        [
            x.name,
            x.region,
            "已报送" if x.reported else "未报送",
            x.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if x.received_at else "",
            *(x.values.get(f.key) if x.reported else None for f in report.fields),
        ]
        for x in report.lines
    ]
    missing: list[list[Cell]] = []
    for x in report.missing:
        liaison = model.directory.people_of(x.unit, "liaison")
        who = liaison[0] if liaison else None
        missing.append([x.name, x.region, who.name if who else "", who.mobile if who else ""])
    return xlsx_bytes(
        [
            Sheet("汇总", ["地区", "已报单位数", "应报单位数", *labels], summary),
            Sheet("明细", ["单位", "所属地区", "状态", "报送时间", *labels], detail),
            Sheet("未报送", ["单位", "所属地区", "联络员", "手机"], missing),
            Sheet("数值问题", ["单位", "文件", "问题"], [list(p) for p in report.problems]),
        ]
    )
