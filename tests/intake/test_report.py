"""附件2 summed for regions and the province: who is missing, bad values listed."""

from __future__ import annotations

import io

from openpyxl import load_workbook

from service.clock import VirtualClock
from service.intake.core import Hints, Incoming, Intake
from service.intake.report import Report, build_report, report_xlsx
from tests.intake.conftest import progress_form

NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]


async def _send(intake: Intake, clock: VirtualClock, unit_name: str, numbers: list[object]) -> None:
    data = progress_form(unit_name, numbers)
    out = await intake.take_file(
        Incoming(f"{unit_name}.xlsx", data, clock.now(), "upload"), Hints(), True
    )
    assert out.status == "recorded", out.message


async def _report(intake: Intake, scope: str | None = None) -> Report:
    active = await intake.ledger.counts()
    return await build_report(
        intake.model, intake.store, active, "weekly-progress", "2023-W22", scope
    )


async def test_region_total_adds_its_units(intake: Intake, received_clock: VirtualClock) -> None:
    """长春市's line sums the city office's and 农安县's tables."""
    await _send(intake, received_clock, "长春市安委会办公室", NUMBERS)
    await _send(intake, received_clock, "农安县安委会办公室", [1] * 10)
    rep = await _report(intake)
    [(_, lines)] = [(r, ls) for r, ls in rep.regions() if r == "长春市安委会办公室"]
    assert rep.totals([x for x in lines if x.reported])["participants"] == 121


async def test_missing_units_are_listed(intake: Intake, received_clock: VirtualClock) -> None:
    """Every owing unit in scope without a recorded table is missing."""
    await _send(intake, received_clock, "长春市安委会办公室", NUMBERS)
    rep = await _report(intake, scope="changchun")
    assert sorted(x.unit for x in rep.missing) == ["dehui", "nongan", "yushu"]


async def test_bad_values_are_listed_not_added(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A negative and a non-numeric cell are reported with their unit and cell."""
    await _send(intake, received_clock, "白山市安委会办公室", [-2, "很多", 5])
    rep = await _report(intake)
    [line] = [x for x in rep.lines if x.unit == "baishan"]
    assert "events" not in line.values and line.values["materials"] == 5
    assert [p[2] for p in rep.problems] == [
        "单元格 B5（宣传活动场次）：不能为负数：-2",
        "单元格 C5（参与人次）：应为整数（单位：人次），实际为 '很多'",
    ]


async def test_a_corrected_resend_replaces_the_first(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """The latest table of a unit counts; the first one's problems disappear with it."""
    await _send(intake, received_clock, "白山市安委会办公室", [-2])
    await _send(intake, received_clock, "白山市安委会办公室", [7])
    rep = await _report(intake)
    [line] = [x for x in rep.lines if x.unit == "baishan"]
    assert line.values == {"events": 7} and rep.problems == []


async def test_retracted_submission_does_not_count(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """Retracting the ledger submission removes the unit's numbers from the sums."""
    await _send(intake, received_clock, "白山市安委会办公室", NUMBERS)
    await intake.ledger.retract("baishan", "weekly-progress", "2023-W22", "clerk")
    rep = await _report(intake)
    assert "baishan" in {x.unit for x in rep.missing}


async def test_workbook_has_summary_detail_missing_and_problems(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """The xlsx carries the four sheets and the province total row."""
    await _send(intake, received_clock, "长春市安委会办公室", NUMBERS)
    rep = await _report(intake)
    wb = load_workbook(io.BytesIO(report_xlsx(rep, intake.model)))
    assert wb.sheetnames == ["汇总", "明细", "未报送", "数值问题"]
    last = list(wb["汇总"].iter_rows(values_only=True))[-1]
    assert last[:4] == ("合计", 1, len(rep.lines), 3)
