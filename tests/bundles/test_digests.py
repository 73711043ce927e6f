"""Digests people keep reading (issue 9.3): working-day lateness, contacts, what changed,
long-overdue units apart, long lists summarised, a cadence per supervisor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service.digests import digest_context, digest_rows
from service.errors import ConfigError
from service.model import CampaignModel, load_model
from service.planner import Planner
from service.runtime import Runtime
from service.steps import Timeline
from service.templates import Templates
from tests.test_dispatcher import World, local

REGISTRATION = "liaison-registration@2023-05-22"  # due Monday 05-22 17:00


def test_days_late_count_working_days_and_never_say_zero(model: CampaignModel) -> None:
    """Due 05-22 17:00: "今日到期" before, "逾期不足1天" the next morning, then working days."""
    row = lambda now: digest_rows(model, [("baicheng", REGISTRATION)], {}, local(now))[0]  # noqa: E731
    assert row("2023-05-22T09:30")["late"] == "今日到期"
    assert row("2023-05-23T09:30")["late"] == "逾期不足1天"
    assert row("2023-05-25T09:30")["late"] == "逾期2个工作日"
    assert row("2023-05-29T09:30")["late"] == "逾期4个工作日"  # the weekend does not count


def test_each_overdue_row_names_the_liaison_and_phone(model: CampaignModel) -> None:
    """The digest row carries the unit liaison's name and mobile (national format)."""
    (row,) = digest_rows(model, [("baicheng", REGISTRATION)], {}, local("2023-05-23T09:30"))
    (liaison,) = model.directory.people_of("baicheng", "liaison")
    assert row["liaison"] == liaison.name
    assert liaison.mobile is not None and row["liaison_phone"] == liaison.mobile[3:]


def test_units_late_for_long_move_to_their_own_section(
    model: CampaignModel, templates_dir: Path
) -> None:
    """Past long_overdue_days working days a unit is listed under 长期未报, not the main list."""
    supervisor = next(p for p in model.directory.supervisors() if p.id == "jilin-office-a")
    now = local("2023-06-26T09:30")
    rows = digest_rows(
        model,
        [("baicheng", REGISTRATION), ("baicheng", "weekly-progress@2023-W25")],
        {},
        now,
    )
    ctx = digest_context(model, supervisor, rows, now)
    text = Templates(templates_dir).render("digest", "email", ctx).text
    main, _, long = text.partition("【长期未报】")
    assert "逾期超过10个工作日" in long and "联络员反馈表" in long
    assert "联络员反馈表" not in main and "进展情况统计表" in main


def test_a_long_list_is_summarised_in_the_body(model: CampaignModel, templates_dir: Path) -> None:
    """More rows than max_rows: the body gives counts per obligation, the rows are attached."""
    supervisor = next(p for p in model.directory.supervisors() if p.id == "jilin-office-a")
    now = local("2023-06-26T09:30")
    entries = [(u, REGISTRATION) for u in model.owers["liaison-registration"]]
    entries += [(u, "weekly-progress@2023-W24") for u in model.owers["weekly-progress"]]
    rows = digest_rows(model, entries, {}, now)
    assert len(rows) > model.schedule.campaign.digest.max_rows
    text = (
        Templates(templates_dir)
        .render("digest", "email", digest_context(model, supervisor, rows, now))
        .text
    )
    assert "完整名单（含联络员及电话）见附件" in text
    assert f"{len(model.owers['liaison-registration'])}项" in text
    assert model.directory.units["baicheng"].name not in text


async def test_the_next_digest_says_what_is_new_and_what_was_resolved(
    world: World, daily_runtime: Runtime
) -> None:
    """nongan registers 05-24 10:00: the supervisor's next digest lists it resolved; the one
    after that says nothing changed."""
    world.runtime = daily_runtime
    world.reconciler.swap(daily_runtime)
    await world.at("2023-05-18T09:00")
    await world.replay("2023-05-23T10:00")
    await world.submit("nongan", "liaison-registration", "2023-05-22", "2023-05-24T10:00")
    await world.at("2023-05-24T10:00")
    await world.replay("2023-05-25T10:00")
    digests = [
        e for e in world.email.sent if e.recipient_name and e.address.startswith("changchun-sup")
    ]
    assert len(digests) == 3  # 05-23, 05-24 (planned at 10:00, after the submission), 05-25
    assert "新增逾期0项，已报送1项" in digests[1].text
    assert "农安县" in digests[1].text.partition("【已报送】")[2]
    assert "新增逾期0项，已报送0项" in digests[2].text


def test_a_weekly_reader_gets_the_digest_on_their_weekday_only(
    write_schedule: Callable[[str], Path], schedule_path: Path, contacts_dir: Path
) -> None:
    """cadence_by_person {jilin-office-a: weekly:monday}: that supervisor's digests are Mondays."""
    text = schedule_path.read_text(encoding="utf-8").replace(
        "    attachment: csv\n",
        "    attachment: csv\n    cadence_by_person: {jilin-office-a: 'weekly:monday'}\n",
    )
    model = load_model(write_schedule(text), contacts_dir)
    planner = Planner(Timeline(model))
    days = set()
    for slot in planner.timeline.slots[:30]:
        for m in planner.digest_messages(slot, {}, slot):
            if m.recipient_id == "jilin-office-a":
                days.add(slot.date().weekday())
    assert days == {0}


@pytest.fixture
def daily_runtime(
    write_schedule: Callable[[str], Path],
    schedule_path: Path,
    contacts_dir: Path,
    templates_dir: Path,
) -> Runtime:
    """The shipped campaign with every supervisor on cadence ``daily``."""
    text = schedule_path.read_text(encoding="utf-8")
    assert text.count("    cadence: changes\n") == 1, "the shipped schedule changed"
    text = text.replace("    cadence: changes\n", "    cadence: daily\n")
    return Runtime.load(write_schedule(text), contacts_dir, templates_dir)


async def test_an_only_when_changed_reader_gets_no_unchanged_digest(world: World) -> None:
    """cadence changes (shipped): a digest identical to the last one is cancelled, saying so."""
    assert world.runtime.model.schedule.campaign.digest.cadence == "changes"
    await world.at("2023-05-18T09:00")
    await world.replay("2023-05-24T10:00")  # 05-23 lists the late registrations; 05-24 the same
    rows = [r for r in (await world.rows()).values() if r["kind"] == "digest"]
    on = {r["due_at"]: r for r in rows if r["recipient_id"] == "yanbian-supervisor"}
    assert on[local("2023-05-23T09:30")]["status"] == "sent"
    second = on[local("2023-05-24T09:30")]
    assert (second["status"], second["reason"]) == (
        "cancelled",
        "reason disappeared: unchanged since the last digest",
    )


def test_a_cadence_for_someone_not_a_supervisor_is_refused(
    write_schedule: Callable[[str], Path], schedule_path: Path, contacts_dir: Path
) -> None:
    """cadence_by_person naming an unknown supervisor is a located error; nothing loads."""
    text = schedule_path.read_text(encoding="utf-8").replace(
        "    cadence: changes\n", "    cadence: changes\n    cadence_by_person: {nobody: daily}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_model(write_schedule(text), contacts_dir)
    (problem,) = err.value.problems
    assert problem.field == "campaign.digest.cadence_by_person.nobody"
    assert "not a supervisor" in problem.message
