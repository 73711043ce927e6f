"""Intake: files and e-mails become ledger submissions, or review items, never guesses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.errors import LedgerError
from service.intake.core import Hints, Incoming, Intake, intake_file
from service.intake.read import FormError
from service.model import CampaignModel
from service.store.ledger import Ledger
from tests.intake.conftest import LABELS_2, make_mail, progress_form, workbook

CHANGCHUN = "长春市安委会办公室"
NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]


def _kept(path: Path) -> tuple[bytes, str, int]:
    return path.read_bytes(), path.name, stat.S_IMODE(os.stat(path).st_mode)


def upload(name: str, data: bytes, clock: VirtualClock) -> Incoming:
    return Incoming(name, data, clock.now(), "upload")


async def test_filled_progress_form_records_the_weeks_submission(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A filled 附件2 received on Friday 06-02 counts for weekly-progress 2023-W22."""
    out = await intake.take_file(
        upload("周报.xlsx", progress_form(CHANGCHUN, NUMBERS), received_clock), Hints(), True
    )
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1


async def test_submission_source_is_upload_and_note_links_the_evidence(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """The ledger row says where it came from and which received file backs it."""
    out = await intake.take_file(
        upload("周报.xlsx", progress_form(CHANGCHUN, NUMBERS), received_clock), Hints(), True
    )
    rows = await intake.ledger.history("changchun")
    assert [(r.source, r.id) for r in rows] == [("upload", out.submission_ids[0])]


async def test_the_same_file_twice_records_once(
    office_model: CampaignModel,
    migrated_engine: AsyncEngine,
    received_clock: VirtualClock,
    tmp_path: Path,
) -> None:
    """Same bytes again: reported as a duplicate, the count stays 1 (both backends)."""
    intake = Intake(office_model, migrated_engine, received_clock, tmp_path / "s", "t")
    data = progress_form(CHANGCHUN, NUMBERS)
    first = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    again = await intake.take_file(upload("b.xlsx", data, received_clock), Hints(), True)
    assert (first.status, again.status) == ("recorded", "duplicate")
    assert await intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1


async def test_kept_file_is_content_addressed_and_private(
    intake: Intake, received_clock: VirtualClock, tmp_path: Path
) -> None:
    """The received file is kept under its SHA-256, readable by the owner only."""
    data = progress_form(CHANGCHUN, NUMBERS)
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    ev = await intake.store.evidence(out.evidence_id or 0)
    assert ev is not None
    assert _kept(Path(ev.stored_path)) == (data, ev.sha256, 0o600)


async def test_parsed_rows_are_kept_with_the_evidence(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """The evidence keeps the typed rows the report sums later."""
    out = await intake.take_file(
        upload("a.xlsx", progress_form(CHANGCHUN, NUMBERS), received_clock), Hints(), True
    )
    ev = await intake.store.evidence(out.evidence_id or 0)
    assert ev is not None and ev.rows[0]["values"]["participants"] == 120


async def test_unit_is_taken_from_the_file_name_when_the_form_has_none(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """No 单位名称 in the sheet: the unit named in the file name is used."""
    data = workbook({"S": [LABELS_2, [None, *NUMBERS]]})
    out = await intake.take_file(
        upload("附件2-四平市安委办.xlsx", data, received_clock), Hints(), True
    )
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("siping", "weekly-progress", "2023-W22") == 1


async def test_unknown_unit_name_goes_to_review(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A unit name the directory does not know is not guessed: it waits for review."""
    out = await intake.take_file(
        upload("a.xlsx", progress_form("火星市安委办", NUMBERS), received_clock), Hints(), True
    )
    assert out.status == "review" and "火星市安委办" in out.message
    assert await intake.ledger.counts() == {}
    assert [i.id for i in await intake.store.reviews()] == [out.review_id]


async def test_unrecognised_table_goes_to_review(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A sheet whose header matches no form waits for review."""
    data = workbook({"S": [["姓名", "金额"], ["张三", 1]]})
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert out.status == "review" and "表头" in out.message


async def test_blank_form_sent_back_goes_to_review(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A form with the unit name but no numbers is not a report."""
    data = progress_form(CHANGCHUN, [])
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert out.status == "review" and "没有找到填写了数据" in out.message


async def test_unreadable_upload_raises_and_keeps_nothing(
    intake: Intake, received_clock: VirtualClock, tmp_path: Path
) -> None:
    """An upload that cannot be read is refused with the reason; nothing is stored."""
    with pytest.raises(FormError, match="宏"):
        await intake.take_file(upload("a.xlsm", b"PK\x03\x04", received_clock), Hints(), True)
    assert await intake.store.reviews() == []
    assert not (tmp_path / "state" / "intake").exists()


async def test_operator_hints_override_inference(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """--unit and --period decide when the form does not name the unit."""
    data = workbook({"S": [LABELS_2, [None, *NUMBERS]]})
    out = await intake.take_file(
        upload("a.xlsx", data, received_clock), Hints(unit="baishan", period="2023-W21"), True
    )
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W21") == 1


async def test_hint_contradicting_the_form_goes_to_review(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """--unit naming another unit than the form's 单位名称 is not silently resolved."""
    out = await intake.take_file(
        upload("a.xlsx", progress_form(CHANGCHUN, NUMBERS), received_clock),
        Hints(unit="baishan"),
        True,
    )
    assert out.status == "review" and "不一致" in out.message


async def test_a_region_file_with_several_units_records_each(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A sheet per county, sent by the region: one submission per county."""
    data = workbook(
        {
            "农安": [LABELS_2, ["农安县安委会办公室", *NUMBERS]],
            "榆树": [LABELS_2, ["榆树市安委办", *NUMBERS]],
        }
    )
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert out.status == "recorded", out.message
    counts = await intake.ledger.counts()
    assert counts == {
        ("nongan", "weekly-progress", "2023-W22"): 1,
        ("yushu", "weekly-progress", "2023-W22"): 1,
    }


async def test_mail_from_a_known_liaison_for_another_unit_goes_to_review(
    intake: Intake,
) -> None:
    """A sender whose unit is neither the form's unit nor above it: review."""
    raw = make_mail(
        "baishan-liaison@example.org", [("周报.xlsx", progress_form(CHANGCHUN, NUMBERS))]
    )
    [out] = await intake.take_message(raw)
    assert out.status == "review" and "发件人" in out.message


async def test_mail_unit_is_the_senders_when_the_form_has_none(intake: Intake) -> None:
    """A form without a unit name, sent by a liaison in the directory: the liaison's unit."""
    data = workbook({"S": [LABELS_2, [None, *NUMBERS]]})
    raw = make_mail("baishan-liaison@example.org", [("周报.xlsx", data)])
    [out] = await intake.take_message(raw)
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_mail_without_a_spreadsheet_goes_to_review_once(intake: Intake) -> None:
    """A text-only mail is never lost: one review item, and the same mail again adds none."""
    raw = make_mail("baishan-liaison@example.org", subject="本周无活动", message_id="<a@b>")
    [first] = await intake.take_message(raw)
    [again] = await intake.take_message(raw)
    assert (first.status, again.status) == ("review", "duplicate")
    assert len(await intake.store.reviews()) == 1


async def test_mail_date_decides_the_period(intake: Intake) -> None:
    """Sent 05-26 (a Friday, W21's due day): counted for 2023-W21, not the day it is read."""
    raw = make_mail(
        "baishan-liaison@example.org",
        [("周报.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
        date="2023-05-26T16:00",
    )
    [out] = await intake.take_message(raw)
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W21") == 1


async def test_review_accept_records_with_the_offices_answer(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """An unplaced file is recorded once the office names the unit."""
    from service.intake.review import accept

    data = workbook({"S": [LABELS_2, [None, *NUMBERS]]})
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert out.status == "review"
    item = await intake.store.review(out.review_id or 0)
    assert item is not None
    await accept(intake, item, contacts, unit="songyuan")
    assert await intake.ledger.count_of("songyuan", "weekly-progress", "2023-W22") == 1
    assert await intake.store.reviews() == []


async def test_review_reject_records_nothing_and_closes_the_item(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A rejected item is closed with its reason; the ledger is unchanged."""
    from service.intake.review import reject

    out = await intake.take_file(
        upload("a.xlsx", progress_form("火星市", NUMBERS), received_clock), Hints(), True
    )
    item = await intake.store.review(out.review_id or 0)
    assert item is not None
    await reject(intake, item, "不是本次活动的表")
    [closed] = await intake.store.reviews(None)
    assert (closed.status, closed.decision) == ("rejected", "不是本次活动的表")
    assert await intake.ledger.counts() == {}


async def test_review_cannot_be_decided_twice(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """Accepting a rejected item is refused (nothing recorded)."""
    from service.intake.review import accept, reject

    out = await intake.take_file(
        upload("a.xlsx", progress_form("火星市", NUMBERS), received_clock), Hints(), True
    )
    item = await intake.store.review(out.review_id or 0)
    assert item is not None
    await reject(intake, item, "")
    decided = await intake.store.review(item.id)
    assert decided is not None
    with pytest.raises(LedgerError, match="already rejected"):
        await accept(intake, decided, contacts, unit="changchun")


async def test_intake_file_accepts_a_whole_eml(
    office_model: CampaignModel,
    sqlite_engine: AsyncEngine,
    received_clock: VirtualClock,
    tmp_path: Path,
) -> None:
    """The web/CLI entry takes a .eml with its attachments, recorded as an upload."""
    raw = make_mail(
        "baishan-liaison@example.org", [("周报.xlsx", progress_form("白山市安委会办公室", NUMBERS))]
    )
    outs = await intake_file(office_model, sqlite_engine, received_clock, tmp_path, "m.eml", raw)
    assert [o.status for o in outs] == ["recorded"]
    led = Ledger(sqlite_engine, office_model.key, received_clock)
    assert [r.source for r in await led.history("baishan")] == ["upload"]


async def test_a_crash_after_the_ledger_write_is_finished_without_a_second_record(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """Evidence left pending by a crash: the retry finds the noted submission, records none."""
    data = progress_form(CHANGCHUN, NUMBERS)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    eid, _ = await intake.store.claim(
        sha256=sha, source="upload", filename="a.xlsx", received_at=received_clock.now()
    )
    await intake.record(
        eid, "weekly-progress", "2023-W22", {"changchun": 1}, received_clock.now(), None
    )
    out = await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert out.status == "recorded"
    assert await intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1


async def test_same_message_id_with_a_resaved_attachment_records_once(intake: Intake) -> None:
    """A resend of one e-mail (same Message-ID, workbook re-saved) is one submission."""
    first = make_mail(
        "baishan-liaison@example.org",
        [("周报.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
        message_id="<resend@example.org>",
    )
    second = make_mail(
        "baishan-liaison@example.org",
        [("周报.xlsx", progress_form("白山市安委会办公室", [9, *NUMBERS[1:]]))],
        message_id="<resend@example.org>",
    )
    await intake.take_message(first)
    [again] = await intake.take_message(second)
    assert again.status == "duplicate"
    assert await intake.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_leads_file_counts_its_items(intake: Intake, received_clock: VirtualClock) -> None:
    """A monthly-leads list with three items counts 3 towards the quota (min 1, target 2)."""
    data = workbook(
        {
            "线索": [
                ["序号", "线索内容"],
                [1, "某矿违规作业"],
                [2, "某厂消防通道堵塞"],
                [3, "某工地未戴安全帽"],
            ]
        }
    )
    out = await intake.take_file(
        upload("线索.xlsx", data, received_clock),
        Hints(unit="changchun", obligation="monthly-leads", period="2023-06"),
        True,
    )
    assert out.status == "recorded", out.message
    assert await intake.ledger.count_of("changchun", "monthly-leads", "2023-06") == 3


async def test_a_single_item_obligation_counts_one_per_unit(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A weekly table with several rows for one unit is still one submission."""
    data = workbook({"S": [LABELS_2, [CHANGCHUN, *NUMBERS], [CHANGCHUN, *NUMBERS]]})
    await intake.take_file(upload("a.xlsx", data, received_clock), Hints(), True)
    assert await intake.ledger.count_of("changchun", "weekly-progress", "2023-W22") == 1


_GOOD_MAIL = make_mail(
    "baishan-liaison@example.org",
    [("周报.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
    message_id="<fuzz@example.org>",
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(min_value=0, max_value=len(_GOOD_MAIL) - 1), st.binary(min_size=1, max_size=6))
async def test_corrupted_mail_is_recorded_or_reviewed_never_half_recorded(
    intake: Intake, at: int, junk: bytes
) -> None:
    """Any damage to a mail ends in recorded/review/duplicate; evidence is never left pending."""
    raw = _GOOD_MAIL[:at] + junk + _GOOD_MAIL[at + len(junk) :]
    outcomes = await intake.take_message(raw)
    assert outcomes and {o.status for o in outcomes} <= {"recorded", "review", "duplicate"}
    for o in outcomes:
        ev = await intake.store.evidence(o.evidence_id or 0)
        assert ev is not None and ev.status in ("recorded", "review")


async def test_review_and_liaison_tables_work_on_both_backends(
    office_model: CampaignModel,
    migrated_engine: AsyncEngine,
    received_clock: VirtualClock,
    tmp_path: Path,
    contacts: Path,
) -> None:
    """Queue, decision and the applied directory change round-trip on SQLite and PostgreSQL."""
    from service.intake.review import accept
    from tests.intake.conftest import liaison_form

    intake = Intake(office_model, migrated_engine, received_clock, tmp_path / "s", "t")
    data = liaison_form("四平市安委会办公室", "赵六", "13900000099", "zl@example.org")
    await intake.take_file(upload("附件1.xlsx", data, received_clock), Hints(), True)
    [item] = await intake.store.reviews()
    assert item.proposal["name"] == "赵六"
    await accept(intake, item, contacts)
    [done] = await intake.store.reviews(None)
    assert (done.status, done.decided_by) == ("accepted", "t")
