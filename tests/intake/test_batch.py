"""A fetched batch of e-mails: one look-up, one group commit, and per-mail idempotency and
isolation as if each e-mail had been taken alone (on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.intake.core import Intake, Outcome
from service.intake.store import Evidence
from service.model import CampaignModel
from service.store.tables import audit_log, intake_evidence, submissions
from tests.intake.conftest import liaison_form, make_mail, progress_form

NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]
CHANGCHUN, BAISHAN, JILIN = "长春市安委会办公室", "白山市安委会办公室", "吉林市安委会办公室"


@pytest.fixture
def batch_intake(
    office_model: CampaignModel,
    migrated_engine: AsyncEngine,
    received_clock: VirtualClock,
    tmp_path: Path,
) -> Intake:
    return Intake(office_model, migrated_engine, received_clock, tmp_path / "state", "test")


def _mail(unit: str, mid: str, numbers: list[int] = NUMBERS, name: str = "周报.xlsx") -> bytes:
    return make_mail("x@example.net", [(name, progress_form(unit, numbers))], message_id=mid)


def _statuses(results: list[list[Outcome] | Exception]) -> list[list[str] | str]:
    return [
        type(r).__name__ if isinstance(r, Exception) else [o.status for o in r] for r in results
    ]


async def _rows(intake: Intake, table: sa.Table) -> int:
    async with intake.store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar())


async def test_a_batch_records_each_mail_with_its_evidence_reviews_and_audit(
    batch_intake: Intake,
) -> None:
    """Recorded, review and liaison-change outcomes all come out of the one group commit."""
    raws = [
        _mail(CHANGCHUN, "<a@x>"),
        _mail(BAISHAN, "<b@x>"),
        make_mail(
            "x@example.net",
            [("附件1.xlsx", liaison_form(JILIN, "王小明", "13900000011", "w@example.org"))],
            message_id="<c@x>",
        ),
        _mail("不存在的单位", "<d@x>"),
    ]
    results = await batch_intake.take_messages(raws)
    assert _statuses(results) == [["recorded"], ["recorded"], ["recorded"], ["review"]]
    outs = [r[0] for r in results if not isinstance(r, Exception)]
    for out in outs[:3]:
        assert out.evidence_id is not None
        ev = await batch_intake.store.evidence(out.evidence_id)
        assert ev is not None and ev.status == "recorded"
        assert ev.submission_ids == out.submission_ids and len(out.submission_ids) == 1
        assert await batch_intake.store.submissions_noted(ev.id) == out.submission_ids
    assert "联络员变更待确认" in outs[2].message
    items = await batch_intake.store.reviews()
    assert sorted(i.kind for i in items) == ["liaison", "submission"]
    assert {i.evidence_id for i in items} == {outs[2].evidence_id, outs[3].evidence_id}
    assert outs[3].review_id in {i.id for i in items}
    assert await batch_intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1
    assert await _rows(batch_intake, audit_log) == 3  # one "submit" row per submission


async def test_repeats_within_a_batch_and_across_passes_record_once(batch_intake: Intake) -> None:
    """The same Message-ID twice, the same file under two Message-IDs, then the whole batch
    again: each submission is recorded once."""
    same_file = progress_form(BAISHAN, NUMBERS)
    raws = [
        _mail(CHANGCHUN, "<a@x>"),
        _mail(CHANGCHUN, "<a@x>", [9, *NUMBERS[1:]]),  # a resend with a re-saved workbook
        make_mail("x@example.net", [("1.xlsx", same_file)], message_id="<b1@x>"),
        make_mail("x@example.net", [("2.xlsx", same_file)], message_id="<b2@x>"),
    ]
    first = await batch_intake.take_messages(raws)
    assert _statuses(first) == [["recorded"], ["duplicate"], ["recorded"], ["duplicate"]]
    again = await batch_intake.take_messages(raws)
    assert _statuses(again) == [["duplicate"]] * 4
    assert await batch_intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1
    assert await batch_intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1
    assert await _rows(batch_intake, submissions) == 2


async def test_one_bad_mail_does_not_cost_the_others_their_recording(
    batch_intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail whose reading raises is reported on its own; the others are recorded and
    nothing at all is kept for the bad one."""
    real = batch_intake.decide

    def fragile(grids: object, item: object, hints: object) -> object:
        if getattr(item, "filename", "") == "坏.xlsx":
            raise RuntimeError("boom")
        return real(grids, item, hints)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_intake, "decide", fragile)
    raws = [
        _mail(CHANGCHUN, "<a@x>"),
        _mail(BAISHAN, "<bad@x>", name="坏.xlsx"),
        _mail(JILIN, "<c@x>"),
    ]
    results = await batch_intake.take_messages(raws)
    assert _statuses(results) == [["recorded"], "RuntimeError", ["recorded"]]
    assert await batch_intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 0
    assert await _rows(batch_intake, intake_evidence) == 2


async def test_a_failed_group_commit_falls_back_to_one_mail_at_a_time(
    batch_intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process records one of the batch's files between the look-up and the group
    commit: the commit fails as a whole (nothing half-recorded), then each mail is taken
    alone: that file is a duplicate, the others are recorded once."""
    shared = progress_form(BAISHAN, NUMBERS)
    [done] = await batch_intake.take_message(
        make_mail("x@example.net", [("早.xlsx", shared)], message_id="<early@x>")
    )
    assert done.status == "recorded"

    async def blind(message_ids: object, shas: object) -> list[Evidence]:
        return []  # as if the other process's row was not there yet at look-up time

    monkeypatch.setattr(batch_intake.store, "known", blind)
    raws = [
        _mail(CHANGCHUN, "<a@x>"),
        make_mail("x@example.net", [("晚.xlsx", shared)], message_id="<late@x>"),
        _mail(JILIN, "<c@x>"),
    ]
    results = await batch_intake.take_messages(raws)
    assert _statuses(results) == [["recorded"], ["duplicate"], ["recorded"]]
    assert await batch_intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1
    assert await batch_intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1
    assert await _rows(batch_intake, intake_evidence) == 3
    assert await _rows(batch_intake, submissions) == 3
