"""Deciding what a read file is: which obligation (by its header), which period (by the
date received) and which units (by the names in it, the sender, the file name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..channels.base import mask_address
from ..errors import LedgerError
from ..model import CampaignModel
from ..submissions import MAX_COUNT, check
from .forms import Row, fingerprint, form_of, forms_in, read_tables
from .infer import UnitIndex, infer_period
from .read import Grid

IntakeSource = Literal["inbound-mail", "upload"]
_NOT_CONTENT = {"remarks"}


@dataclass(frozen=True)
class Hints:
    """What the operator says on the command line (or the web form): wins over inference."""

    unit: str | None = None
    obligation: str | None = None
    period: str | None = None


@dataclass(frozen=True)
class Incoming:
    filename: str
    data: bytes
    received_at: datetime
    source: IntakeSource
    sender: str | None = None
    message_id: str | None = None


@dataclass
class Decision:
    obligation: str | None = None
    period: str | None = None
    units: dict[str, list[Row]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    review: str = ""  # why the office must decide; empty when the file can be recorded
    counts: dict[str, int] = field(default_factory=dict)


def decide(
    model: CampaignModel, index: UnitIndex, grids: list[Grid], item: Incoming, hints: Hints
) -> Decision:
    """Which obligation, period and units; ``review`` says why a person must decide."""
    d = Decision()
    forms = forms_in(model.schedule)
    if hints.obligation:
        try:
            ob = model.schedule.obligation(hints.obligation)
        except KeyError:
            raise LedgerError(f"obligation: unknown obligation {hints.obligation!r}") from None
        d.obligation = ob.key
    else:
        found = fingerprint(grids, forms)
        if not found:
            d.review = "表头与任何附件（表格）都对不上，无法判断报送的是哪一项"
            return d
        if len(found) > 1 and found[0][1] == found[1][1]:
            d.review = f"表头同时符合 {found[0][0]} 和 {found[1][0]}，无法判断"
            return d
        d.obligation = found[0][0]
    ob = model.schedule.obligation(d.obligation)
    form = form_of(ob)
    if form is not None:
        d.rows = [r for t in read_tables(grids, form) for r in t.rows if _has_content(r, form)]
        if not d.rows:
            d.review = f"没有找到填写了数据的“{form.attachment}”表格行"
            return d
    else:  # no declared form (e.g. leads): every non-blank line after a header is an item
        d.rows = [
            Row(g.sheet, no, None, {"text": " ".join(str(v) for v in vals if v is not None)})
            for g in grids
            for no, vals in g.rows[1:]
        ]
    occ = (
        model.occurrence(d.obligation, hints.period)
        if hints.period
        else infer_period(model, d.obligation, item.received_at)
    )
    if occ is None:
        d.review = f"{d.obligation} 没有期次 {hints.period!r}"
        return d
    d.period = occ.period
    d.review = _assign_units(model, index, d, item, hints)
    if d.review:
        return d
    for unit, rows in d.units.items():
        d.counts[unit] = min(MAX_COUNT, max(1, len(rows))) if occ.quota_goal > 1 else 1
        try:
            check(model, unit, d.obligation, d.period, d.counts[unit])
        except LedgerError as exc:
            d.review = f"{model.directory.units[unit].name}：{exc}"
            return d
    return d


def _assign_units(
    model: CampaignModel, idx: UnitIndex, d: Decision, item: Incoming, hints: Hints
) -> str:
    """Fill ``d.units``; return why not when the unit is unknown, unclear or contradicted."""
    if hints.unit and hints.unit not in idx.by_id:
        raise LedgerError(f"unit: unknown unit {hints.unit!r}")
    senders = idx.of_sender(item.sender)
    fallback = hints.unit or (senders[0] if len(senders) == 1 else None)
    by_file: list[str] | None = None  # looked up only for a row without a unit name
    for row in d.rows:
        if row.unit_name:
            ids = idx.by_name(row.unit_name)
            if len(ids) != 1:
                what = "对应多个单位" if ids else "在名录中找不到"
                return f"表内单位名称“{row.unit_name}”{what}（{row.sheet} 第{row.row}行）"
            unit = ids[0]
            if hints.unit and unit != hints.unit:
                return f"表内单位“{row.unit_name}”与指定的单位 {hints.unit} 不一致"
        else:
            if fallback is None and by_file is None:
                by_file = idx.in_file_name(item.filename)
                fallback = by_file[0] if len(by_file) == 1 else None
            if not fallback:
                return "无法判断是哪个单位报送的：表内没有单位名称，发件人和文件名也对不上名录"
            unit = fallback
        row.unit = unit
        d.units.setdefault(unit, []).append(row)
    if senders and not hints.unit:
        allowed = {u for s in senders for u in model.directory.subtree(s)}
        strangers = [u for u in d.units if u not in allowed]
        if strangers:
            names = "、".join(idx.by_id[u].name for u in strangers)
            return f"发件人（{mask(item.sender)}）不属于表内单位 {names} 或其上级"
    return ""


def _has_content(row: Row, form: Any) -> bool:
    skip = {form.unit_field, *_NOT_CONTENT}
    return any(v is not None for k, v in row.values.items() if k not in skip)


def mask(address: str | None) -> str:
    return mask_address(address) if address else "-"
