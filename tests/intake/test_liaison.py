"""附件1 closes the loop: the filled liaison form records the registration and, once the
office confirms, the directory names the new liaison and reminders go to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.clock import VirtualClock
from service.errors import LedgerError
from service.intake.core import Hints, Incoming, Intake
from service.intake.review import accept
from service.runtime import Runtime
from service.store.tables import directory_changes
from tests.conftest import ROOT
from tests.intake.conftest import liaison_form

CHANGCHUN = "长春市安委会办公室"


async def _send(intake: Intake, clock: VirtualClock, mobile: str = "13900000011") -> list[int]:
    data = liaison_form(CHANGCHUN, "王小明", mobile, "wxm@example.org")
    out = await intake.take_file(Incoming("附件1.xlsx", data, clock.now(), "upload"), Hints(), True)
    assert out.status == "recorded", out.message
    return [i.id for i in await intake.store.reviews() if i.kind == "liaison"]


async def test_liaison_form_records_the_registration(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """The filled 附件1 counts for liaison-registration."""
    await _send(intake, received_clock)
    assert await intake.ledger.count_of("changchun", "liaison-registration", "2023-05-22") == 1


async def test_liaison_form_proposes_the_change_without_applying_it(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """The new liaison is a proposal: people.csv is unchanged until the office confirms."""
    before = (contacts / "people.csv").read_bytes()
    [rid] = await _send(intake, received_clock)
    item = await intake.store.review(rid)
    assert item is not None and item.proposal["mobile"] == "+8613900000011"
    assert item.proposal["current"]["name"] == "李海燕"
    assert (contacts / "people.csv").read_bytes() == before


async def test_accepted_change_makes_reminders_go_to_the_new_liaison(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """After acceptance the reloaded directory gives the liaison's new address."""
    [rid] = await _send(intake, received_clock)
    item = await intake.store.review(rid)
    assert item is not None
    await accept(intake, item, contacts)
    runtime = Runtime.load(ROOT / "schedules" / "jilin-2023.yaml", contacts, ROOT / "templates")
    [liaison] = runtime.model.directory.people_of("changchun", "liaison")
    assert (liaison.name, liaison.email, liaison.mobile) == (
        "王小明",
        "wxm@example.org",
        "+8613900000011",
    )


async def test_accepted_change_is_kept_with_before_and_after(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """directory_changes keeps who changed the liaison, from what, to what."""
    [rid] = await _send(intake, received_clock)
    item = await intake.store.review(rid)
    assert item is not None
    await accept(intake, item, contacts)
    async with intake.store.engine.connect() as conn:
        [row] = (await conn.execute(directory_changes.select())).mappings().all()
    assert (row["before"]["name"], row["after"]["name"], row["applied_by"]) == (
        "李海燕",
        "王小明",
        "test",
    )


async def test_other_rows_of_people_csv_are_untouched(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """Only the unit's liaison line changes; every other line stays byte for byte."""
    before = (contacts / "people.csv").read_text(encoding="utf-8").splitlines()
    [rid] = await _send(intake, received_clock)
    item = await intake.store.review(rid)
    assert item is not None
    await accept(intake, item, contacts)
    after = (contacts / "people.csv").read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b for _, b in changed] == [
        "changchun-liaison,王小明,changchun,liaison,,wxm@example.org,+8613900000011"
    ]


async def test_invalid_mobile_is_refused_at_acceptance_and_changes_nothing(
    intake: Intake, received_clock: VirtualClock, contacts: Path
) -> None:
    """A landline in the 手机 column cannot become the liaison's mobile: refused, file kept."""
    before = (contacts / "people.csv").read_bytes()
    [rid] = await _send(intake, received_clock, mobile="043188881234")
    item = await intake.store.review(rid)
    assert item is not None
    with pytest.raises(LedgerError, match="mobile"):
        await accept(intake, item, contacts)
    assert (contacts / "people.csv").read_bytes() == before
    reopened = await intake.store.review(rid)
    assert reopened is not None and reopened.status == "open"


async def test_unchanged_liaison_proposes_nothing(
    intake: Intake, received_clock: VirtualClock
) -> None:
    """A 附件1 naming the liaison the directory already has adds no review item."""
    data = liaison_form(CHANGCHUN, "李海燕", "13800000001", "changchun-liaison@example.org")
    out = await intake.take_file(
        Incoming("附件1.xlsx", data, received_clock.now(), "upload"), Hints(), True
    )
    assert out.status == "recorded" and await intake.store.reviews() == []
