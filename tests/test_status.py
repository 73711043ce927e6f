"""Status and overdue lists: pure functions of (model, counts, moment, scope)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.model import CampaignModel
from service.occurrences import Occurrence
from service.status import (
    UnitStatus,
    compute_status,
    open_occurrences,
    overdue_in_scope,
    state_of,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
AFTER_W25 = datetime(2023, 6, 21, 17, 1, tzinfo=SHANGHAI)  # one minute past W25's due


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def occ(model: CampaignModel, obligation: str, period: str) -> Occurrence:
    found = model.occurrence(obligation, period)
    assert found is not None
    return found


def test_state_done_when_quota_met(model: CampaignModel) -> None:
    """Meeting the minimum is done, before or after the due moment."""
    w25 = occ(model, "weekly-progress", "2023-W25")
    assert state_of(w25, 1, w25.due_at - timedelta(days=1)) == "done"
    assert state_of(w25, 1, w25.due_at + timedelta(days=30)) == "done"


def test_state_outstanding_until_due_inclusive(model: CampaignModel) -> None:
    """Below the minimum it is outstanding up to and including the due moment."""
    w25 = occ(model, "weekly-progress", "2023-W25")
    assert state_of(w25, 0, w25.due_at - timedelta(hours=1)) == "outstanding"
    assert state_of(w25, 0, w25.due_at) == "outstanding"


def test_state_overdue_after_due(model: CampaignModel) -> None:
    """Below the minimum after the due moment is overdue."""
    w25 = occ(model, "weekly-progress", "2023-W25")
    assert state_of(w25, 0, w25.due_at + timedelta(seconds=1)) == "overdue"


def test_quota_progress(model: CampaignModel) -> None:
    """monthly-leads: 1 of target 2 is done with progress 1/2; 0 is overdue 0/2."""
    july = occ(model, "monthly-leads", "2023-07")
    moment = at("2023-08-01T09:00")
    rows = compute_status(
        model, {("yanji", "monthly-leads", "2023-07"): 1}, moment, ["yanji", "dunhua"]
    )
    got = {(r.unit, r.state, r.progress) for r in rows if r.occurrence == july}
    assert got == {("yanji", "done", "1/2"), ("dunhua", "overdue", "0/2")}


def test_open_occurrences_at_notice_date(model: CampaignModel) -> None:
    """On 2023-05-18 only the once obligations are open."""
    keys = [o.key for o in open_occurrences(model, at("2023-05-18T09:00"))]
    assert keys == ["liaison-registration@2023-05-22", "activity-summary@2023-06-30"]


def test_open_occurrences_exclude_events(model: CampaignModel) -> None:
    """Events are never in the status: nothing is submitted for them."""
    kinds = {o.kind for o in open_occurrences(model, at("2024-01-01T00:00"))}
    assert kinds == {"once", "weekly", "monthly"}


def test_weekly_period_opens_saturday_before(model: CampaignModel) -> None:
    """W25 is not open on Friday 06-16 and is open on Saturday 06-17."""
    before = {o.key for o in open_occurrences(model, at("2023-06-16T23:59"))}
    after = {o.key for o in open_occurrences(model, at("2023-06-17T00:00"))}
    assert after - before == {"weekly-progress@2023-W25"}


def test_compute_status_covers_owers(model: CampaignModel) -> None:
    """Status has one row per owing unit and open occurrence; states at a moment."""
    counts = {("changchun", "weekly-progress", "2023-W25"): 1}
    rows = compute_status(model, counts, AFTER_W25)
    w25 = [r for r in rows if r.occurrence.key == "weekly-progress@2023-W25"]
    assert len(w25) == 26
    assert {r.unit: r.state for r in w25 if r.unit in ("changchun", "yanji")} == {
        "changchun": "done",
        "yanji": "overdue",
    }
    summary = [r for r in rows if r.occurrence.key == "activity-summary@2023-06-30"]
    assert {r.state for r in summary} == {"outstanding"}


def test_compute_status_for_some_units(model: CampaignModel) -> None:
    """Limiting to units returns only their rows."""
    rows = compute_status(model, {}, AFTER_W25, ["dept-education"])
    assert {r.unit for r in rows} == {"dept-education"}
    assert "monthly-exposure" not in {r.occurrence.obligation for r in rows}


def overdue_units(grouped: dict[str, list[UnitStatus]]) -> set[str]:
    return {st.unit for items in grouped.values() for st in items}


def test_overdue_groups_by_obligation(model: CampaignModel) -> None:
    """Overdue rows are grouped by obligation and are all overdue."""
    grouped = overdue_in_scope(model, {}, at("2023-07-03T09:00"))
    assert set(grouped) == {
        "liaison-registration",
        "weekly-progress",
        "monthly-leads",
        "monthly-exposure",
        "activity-summary",
    }
    assert all(st.state == "overdue" for items in grouped.values() for st in items)
    assert len(grouped["monthly-exposure"]) == 11
    assert len(grouped["weekly-progress"]) == 26 * 6


def test_overdue_excludes_done(model: CampaignModel) -> None:
    """A unit that submitted is not in the overdue list for that occurrence."""
    counts = {("yanji", "weekly-progress", "2023-W25"): 1}
    grouped = overdue_in_scope(model, counts, AFTER_W25, "yanbian")
    assert {(st.unit, st.occurrence.period) for st in grouped["weekly-progress"]} >= {
        ("yanbian", "2023-W25"),
        ("hunchun", "2023-W25"),
    }
    assert ("yanji", "2023-W25") not in {
        (st.unit, st.occurrence.period) for st in grouped["weekly-progress"]
    }


def test_overdue_scope_region_is_its_subtree(model: CampaignModel) -> None:
    """scope=changchun lists only changchun and its counties."""
    grouped = overdue_in_scope(model, {}, AFTER_W25, "changchun")
    assert overdue_units(grouped) == {"changchun", "nongan", "yushu", "dehui"}


def test_overdue_scope_province_is_everything(model: CampaignModel) -> None:
    """scope=jilin lists every overdue unit, as does no scope."""
    everyone = overdue_in_scope(model, {}, AFTER_W25)
    assert overdue_in_scope(model, {}, AFTER_W25, "jilin") == everyone
    assert overdue_units(everyone) == set(model.directory.units) - {"jilin"}


@pytest.mark.parametrize("region", ["changchun", "yanbian", "meihekou"])
def test_department_never_under_region_scope(model: CampaignModel, region: str) -> None:
    """Departments and enterprises never appear under a region's scope."""
    units = overdue_units(overdue_in_scope(model, {}, at("2023-12-31T23:00"), region))
    kinds = {model.directory.units[u].kind for u in units}
    assert kinds <= {"region", "county"}
    assert region in units


def test_overdue_scope_leaf(model: CampaignModel) -> None:
    """A county's scope is only itself."""
    assert overdue_units(overdue_in_scope(model, {}, AFTER_W25, "dunhua")) == {"dunhua"}


def test_nothing_overdue_before_first_due(model: CampaignModel) -> None:
    """Before the first deadline nothing is overdue."""
    assert overdue_in_scope(model, {}, at("2023-05-22T17:00")) == {}
