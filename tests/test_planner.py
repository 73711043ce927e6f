"""The planner: a pure function of (schedule, directory, submissions, window) — DESIGN §4.1.

Everything here runs on the shipped campaign (``model``) or a variant of its YAML, with no
database and no clock: only ``Timeline``/``Planner`` and hand-made submission counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from service.model import CampaignModel, load_model
from service.planner import PlannedMessage, Planner
from service.steps import Timeline, campaign_end

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAMPAIGN = "jilin-2023"
SHIPPED_WEEKLY = "recurrence: {type: weekly, weekday: friday, start: 2023-05-26, end: 2023-06-30}"
SHIPPED_REGISTRATION_REMINDERS = """    reminders:
      - {days: 2, count: working, at: "09:00"}
      - {days: 0, count: working, at: "09:00"}
    escalation: *escalation
    how_to_submit: 填写附件1后"""


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def plan_once(
    model: CampaignModel,
    since: str | None,
    now: str,
    counts: dict[tuple[str, str, str], int] | None = None,
) -> list[PlannedMessage]:
    """One planning run over (since, now]: what a service started at ``now`` plans."""
    planner = Planner(Timeline(model))
    return planner.plan(counts or {}, local(since) if since else None, local(now)).messages


def plan(
    model: CampaignModel,
    since: str | None,
    now: str,
    counts: dict[tuple[str, str, str], int] | None = None,
) -> list[PlannedMessage]:
    """What a daemon running throughout (since, now] plans: one run at each due moment."""
    timeline = Timeline(model)
    planner = Planner(timeline)
    start = local(since) if since else None
    end = local(now)
    moments = sorted(
        {t for t in [*(st.moment for st in timeline.steps), *timeline.slots] if t <= end} | {end}
    )
    out: list[PlannedMessage] = []
    for t in moments:
        if start is not None and t <= start:
            continue
        out += planner.plan(counts or {}, start, t).messages
        start = t
    return out


def items(messages: list[PlannedMessage]) -> list[tuple[PlannedMessage, dict[str, str]]]:
    """Every (message, item) pair: the reasons the messages carry."""
    return [(m, it) for m in messages for it in m.items]


def day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def variant(write_schedule: Callable[[str], Path], schedule_path: Path, old: str, new: str) -> Path:
    text = schedule_path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the shipped schedule changed: {old!r} not found once"
    return write_schedule(text.replace(old, new))


def test_planning_the_same_window_twice_yields_identical_messages(model: CampaignModel) -> None:
    """Two planners over the same inputs and window produce the same keys and rows."""
    counts = {("changchun", "liaison-registration", "2023-05-22"): 1}
    first = plan(model, None, "2023-07-05T12:00", counts)
    second = plan(model, None, "2023-07-05T12:00", counts)
    assert first, "the window should contain messages"
    assert [m.key for m in first] == [m.key for m in second]
    assert first == second
    assert len({m.key for m in first}) == len(first)


def test_keys_are_campaign_moment_recipient_channel_one_bundle_each(
    model: CampaignModel,
) -> None:
    """A bundle's key is campaign/moment/recipient/channel: one message per person per moment."""
    messages = plan(model, None, "2023-06-01T12:00")
    assert {m.kind for m in messages} >= {"reminder", "overdue", "escalation", "notice", "digest"}
    for m in messages:
        if m.kind == "digest":
            continue
        camp, moment, recipient, channel = m.key.split("/")
        assert camp == CAMPAIGN
        assert moment == m.due_at.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
        assert (recipient, channel) == (m.recipient_id, m.channel)
    bundles = Counter((m.recipient_id, m.channel, m.due_at) for m in messages if m.kind != "digest")
    assert set(bundles.values()) == {1}
    assert "jilin-2023/2023-05-18T09:00/changchun-liaison/email" in {m.key for m in messages}


def test_a_bundle_carries_every_item_of_its_moment_most_urgent_first(
    model: CampaignModel,
) -> None:
    """On 06-25 09:00 baicheng's liaison gets one e-mail: the overdue W25 and three reminders."""
    messages = [
        m
        for m in plan(model, "2023-06-25T08:00", "2023-06-25T09:00")
        if m.recipient_id == "baicheng-liaison" and m.channel == "email"
    ]
    assert len(messages) == 1
    bundle = messages[0]
    assert bundle.kind == "overdue"
    assert [it["kind"] for it in bundle.items][0] == "overdue"
    assert {(it["obligation"], it["period"]) for it in bundle.items} == {
        ("weekly-progress", "2023-W25"),
        ("activity-summary", "2023-06-30"),
        ("monthly-leads", "2023-06"),
        ("monthly-exposure", "2023-06"),
    }
    assert bundle.obligation is None  # several obligations


def test_a_unit_with_a_submission_gets_no_reminder(model: CampaignModel) -> None:
    """A unit whose quota is met is left out; the others are still reminded."""
    counts = {("changchun", "liaison-registration", "2023-05-22"): 1}
    messages = [
        m
        for m in plan(model, None, "2023-05-22T12:00", counts)
        if m.obligation == "liaison-registration"
    ]
    assert not [m for m in messages if m.units == ("changchun",)]
    reminded = {m.units[0] for m in messages}
    assert reminded == set(model.owers["liaison-registration"]) - {"changchun"}


def test_liaison_registration_reminders_two_working_days_before_and_on_the_day(
    model: CampaignModel,
) -> None:
    """Registration reminders go out 2023-05-18 09:00 (2 working days before) and 05-22 09:00."""
    messages = [
        m for m in plan(model, None, "2023-05-22T17:00") if m.obligation == "liaison-registration"
    ]
    assert {m.kind for m in messages} == {"reminder"}
    assert {m.due_at for m in messages} == {local("2023-05-18T09:00"), local("2023-05-22T09:00")}
    per_liaison = Counter((m.recipient_id, m.channel) for m in messages)
    assert set(per_liaison.values()) == {2}
    assert {r for r, _ in per_liaison} == {
        p.id
        for u in model.owers["liaison-registration"]
        for p in model.directory.people_of(u, "liaison")
    }


def test_weekly_w25_reminders_follow_the_dragon_boat_holiday_policy(model: CampaignModel) -> None:
    """W25 (Fri 06-23 is a holiday) is reminded on 06-20 and 06-21, never around 06-23."""
    messages = [
        m
        for m in plan(model, "2023-06-19T00:00", "2023-06-26T00:00")
        if m.obligation == "weekly-progress"
    ]
    w25 = [m for m in messages if m.periods == ("weekly-progress@2023-W25",)]
    reminders = {day(m.due_at) for m in w25 if m.kind == "reminder"}
    assert reminders == {date(2023, 6, 20), date(2023, 6, 21)}
    assert not [m for m in messages if date(2023, 6, 22) <= day(m.due_at) <= date(2023, 6, 24)]
    w25_occurrence = model.occurrence("weekly-progress", "2023-W25")
    assert w25_occurrence is not None and w25_occurrence.due_at == local("2023-06-21T17:00")


def test_a_holiday_fold_gives_one_message_naming_both_periods(
    write_schedule: Callable[[str], Path],
    schedule_path: Path,
    contacts_dir: Path,
) -> None:
    """Fridays 09-29 and 10-06 shift to 09-28: one message per liaison names W39+W40."""
    path = variant(
        write_schedule,
        schedule_path,
        SHIPPED_WEEKLY,
        SHIPPED_WEEKLY.replace("end: 2023-06-30", "end: 2023-10-13"),
    )
    folded = load_model(path, contacts_dir)
    messages = [
        m
        for m in plan(folded, "2023-09-26T00:00", "2023-09-28T12:00")
        if any(it["obligation"] == "weekly-progress" for it in m.items) and m.kind == "reminder"
    ]
    assert messages
    both = {"weekly-progress@2023-W39", "weekly-progress@2023-W40"}
    assert all(both <= set(m.periods) for m in messages)
    weekly = [it for m in messages for it in m.items if it["obligation"] == "weekly-progress"]
    assert {(it["period"], it["step"]) for it in weekly} == {
        ("2023-W39", "reminder1-1wd"),
        ("2023-W40", "reminder1-1wd"),
        ("2023-W39", "reminder2-0wd"),
        ("2023-W40", "reminder2-0wd"),
    }
    assert {m.due_at for m in messages} == {local("2023-09-27T09:00"), local("2023-09-28T09:00")}
    per_moment = Counter((m.recipient_id, m.channel, m.due_at) for m in messages)
    assert set(per_moment.values()) == {1}
    liaisons = {
        p.id
        for u in folded.owers["weekly-progress"]
        for p in folded.directory.people_of(u, "liaison")
    }
    assert {r for r, _, _ in per_moment} == liaisons


def test_a_reminder_planned_after_its_deadline_is_stale_while_overdue_is_pending(
    model: CampaignModel,
) -> None:
    """After downtime until 05-23 10:00, registration reminders are stale, overdue ones pending."""
    messages = [
        m
        for m in plan_once(model, None, "2023-05-23T10:00")
        if m.obligation == "liaison-registration"
    ]
    reminders = [m for m in messages if m.kind == "reminder"]
    overdue = [m for m in messages if m.kind == "overdue"]
    assert reminders and overdue
    assert {m.status for m in reminders} == {"stale"}
    assert all("after it stopped making sense" in m.reason for m in reminders)
    assert {m.status for m in overdue} == {"pending"}
    assert {m.reason for m in overdue} == {""}
    assert {m.due_at for m in overdue} == {local("2023-05-23T09:00")}


def test_sms_due_before_the_window_waits_until_eight(
    write_schedule: Callable[[str], Path],
    schedule_path: Path,
    contacts_dir: Path,
) -> None:
    """A reminder due at 06:00 on a working day is planned for 08:00, e-mail and SMS alike."""
    path = variant(
        write_schedule,
        schedule_path,
        SHIPPED_REGISTRATION_REMINDERS,
        SHIPPED_REGISTRATION_REMINDERS.replace(
            '{days: 0, count: working, at: "09:00"}', '{days: 0, count: working, at: "06:00"}'
        ),
    )
    early = load_model(path, contacts_dir)
    messages = [
        m
        for m in plan(early, "2023-05-22T00:00", "2023-05-22T06:00")
        if m.obligation == "liaison-registration"
    ]
    sms = [m for m in messages if m.channel == "sms"]
    email = [m for m in messages if m.channel == "email"]
    assert sms and email
    assert {m.due_at for m in messages} == {local("2023-05-22T08:00")}
    assert {m.next_attempt_at for m in sms} == {local("2023-05-22T08:00")}
    assert {m.next_attempt_at for m in email} == {local("2023-05-22T08:00")}
    assert {m.status for m in messages} == {"pending"}


def test_a_channel_window_of_its_own_lets_email_go_at_six(
    write_schedule: Callable[[str], Path],
    schedule_path: Path,
    contacts_dir: Path,
) -> None:
    """sending_windows.email overrides the campaign window for e-mail only."""
    text = schedule_path.read_text(encoding="utf-8")
    text = text.replace(
        SHIPPED_REGISTRATION_REMINDERS,
        SHIPPED_REGISTRATION_REMINDERS.replace(
            '{days: 0, count: working, at: "09:00"}', '{days: 0, count: working, at: "06:00"}'
        ),
    ).replace(
        "  channels: [email, sms]\n",
        '  channels: [email, sms]\n  sending_windows:\n    email: {start: "05:00", end: "22:00"}\n',
        1,
    )
    early = load_model(write_schedule(text), contacts_dir)
    messages = plan(early, "2023-05-22T00:00", "2023-05-22T06:00")
    assert {m.next_attempt_at for m in messages if m.channel == "email"} == {
        local("2023-05-22T06:00")
    }
    assert {m.next_attempt_at for m in messages if m.channel == "sms"} == {
        local("2023-05-22T08:00")
    }


def test_sms_due_on_a_weekend_waits_for_the_next_working_day(
    write_schedule: Callable[[str], Path],
    schedule_path: Path,
    contacts_dir: Path,
) -> None:
    """A reminder due Saturday 05-20 10:00 is planned for Monday 05-22 08:00 (both channels)."""
    path = variant(
        write_schedule,
        schedule_path,
        SHIPPED_REGISTRATION_REMINDERS,
        SHIPPED_REGISTRATION_REMINDERS.replace(
            '{days: 2, count: working, at: "09:00"}', '{days: 2, count: calendar, at: "10:00"}'
        ),
    )
    weekend = load_model(path, contacts_dir)
    messages = [
        m
        for m in plan(weekend, "2023-05-20T00:00", "2023-05-21T00:00")
        if m.obligation == "liaison-registration"
    ]
    assert {m.due_at for m in messages} == {local("2023-05-22T08:00")}
    assert {m.next_attempt_at for m in messages} == {local("2023-05-22T08:00")}


def test_digests_only_for_the_latest_slot_one_per_supervisor(model: CampaignModel) -> None:
    """A window spanning four digest slots plans one digest per supervisor, for the last slot."""
    messages = [
        m for m in plan_once(model, "2023-05-22T12:00", "2023-05-26T12:00") if m.kind == "digest"
    ]
    assert {m.due_at for m in messages} == {local("2023-05-26T09:30")}
    per_supervisor = Counter((m.recipient_id, m.channel) for m in messages)
    assert set(per_supervisor.values()) == {1}
    supervisors = {p.id for p in model.directory.supervisors()}
    assert {r for r, _ in per_supervisor} == supervisors  # nobody submitted: every scope is late


def test_digests_list_only_units_in_the_supervisors_subtree(model: CampaignModel) -> None:
    """Each digest lists units of the supervisor's subtree; a region never sees a department."""
    people = {p.id: p for p in model.directory.people}
    units = model.directory.units
    messages = [
        m for m in plan(model, "2023-06-01T00:00", "2023-06-01T12:00") if m.kind == "digest"
    ]
    assert messages
    for m in messages:
        scope = people[m.recipient_id].scope
        assert scope is not None
        assert set(m.units) <= set(model.directory.subtree(scope)), m.key
        if units[scope].kind == "region":
            assert {units[u].kind for u in m.units} <= {"region", "county"}, m.key
    by_recipient = {m.recipient_id: set(m.units) for m in messages}
    assert by_recipient["changchun-supervisor"] == {"changchun", "nongan", "yushu", "dehui"}
    assert by_recipient["yanbian-supervisor"] == {"yanbian", "yanji", "hunchun", "dunhua"}
    assert by_recipient["jilin-office-a"] == set(model.owers["liaison-registration"])


def test_nothing_is_planned_after_the_campaign_end(model: CampaignModel) -> None:
    """All messages are due before 2024-01-01 00:00; a window after the end plans nothing."""
    end = local("2024-01-01T00:00")
    assert campaign_end(model) == end
    messages = plan(model, None, "2024-03-01T00:00")
    assert messages
    assert max(m.due_at for m in messages) < end
    assert max(m.next_attempt_at for m in messages) < end
    assert all(m.expires_at <= end for m in messages)
    assert plan(model, "2024-01-01T00:00", "2024-06-01T00:00") == []
    last = [m for m in messages if day(m.due_at) >= date(2023, 12, 30)]
    assert last == []


def test_a_count_table_plans_exactly_what_a_dict_of_counts_plans(model: CampaignModel) -> None:
    """The planner's CountTable fast path gives the same messages as plain dict counts."""
    from service.counts import CountTable

    units = list(model.directory.units)
    counts = {
        (unit, occ.obligation, occ.period): 1 + i % 2
        for i, unit in enumerate(units[::3])
        for occ in model.occurrences[: 1 + i % 7]
    }
    table = CountTable({unit: i for i, unit in enumerate(units)})
    for (unit, obligation, period), n in counts.items():
        table.add(unit, obligation, period, n)
    planner = Planner(Timeline(model))
    end = local("2023-12-31T23:00")
    from_dict = planner.plan(counts, None, end).messages
    from_table = planner.plan(table, None, end).messages
    assert len(from_dict) > 100
    assert from_table == from_dict
    assert len(from_dict) < len(plan(model, None, "2023-12-31T23:00"))  # counts mattered


def test_no_step_of_an_occurrence_reminds_a_unit_that_met_its_quota(
    model: CampaignModel,
) -> None:
    """Over the whole campaign, reminders, overdue notices and escalations all leave out the
    units that met an occurrence's quota (a different half for each occurrence), and reach
    those that did not."""
    units = sorted(model.directory.units)
    counts = {
        (unit, occ.obligation, occ.period): occ.quota_min
        for i, occ in enumerate(model.occurrences)
        for unit in units[i % 2 :: 2]
    }
    messages = plan(model, None, "2023-12-31T23:00", counts)
    owed = [
        (it["unit"], it["obligation"], it["period"], it["kind"])
        for m in messages
        if m.kind != "digest"
        for it in m.items
        if it["kind"] != "notice"
    ]
    assert not [o for o in owed if o[:3] in counts]
    assert {"reminder", "overdue", "escalation"} <= {o[3] for o in owed}
