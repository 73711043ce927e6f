"""The shipped 2023 campaign replayed end to end (DESIGN §7, the issue's acceptance list).

One replay per module: ``service.simulate.simulate`` from 2023-05-18 00:00 to 2024-01-01
00:00 (Asia/Shanghai) with ``tests/data/submissions-2023.csv``, through the daemon's own
cycle into a file outbox. The tests read ``messages.jsonl`` (what was sent, when, to whom)
and ``outbox-states.jsonl`` (every message's final state).

Quota decision (DESIGN §2/§3: monthly leads "at least 1 (target 2)"): the *minimum* is the
obligation; once a unit has submitted ``quota.min`` (1) for a month it is done and is not
reminded again, even below the target (2), which is only shown as progress.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.config import Settings
from service.model import CampaignModel
from service.simulate import SimulationResult, simulate
from service.store.outbox import FINAL

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2023, 5, 18, 0, 0, tzinfo=SHANGHAI)
END = datetime(2024, 1, 1, 0, 0, tzinfo=SHANGHAI)
SUBMISSIONS = Path(__file__).parent / "data" / "submissions-2023.csv"
KINDS = {"reminder", "overdue", "escalation", "digest", "notice"}


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def item_views(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each sent bundle seen as one row per item it carried (digests stay whole).

    A bundle's row fields (key, at, channel, recipient, subject, body) are shared; the
    obligation, period, unit, step and kind are the item's.
    """
    out = []
    for m in messages:
        if m["kind"] == "digest":
            out.append(m)
            continue
        out.extend(
            m
            | {
                "kind": re.match(r"[a-z]+", it["step"]).group(0),  # type: ignore[union-attr]
                "obligation": it["obligation"],
                "period": it["period"],
                "periods": [f"{it['obligation']}@{it['period']}"],
                "units": [it["unit"]],
                "step": it["step"],
                "bundle_kind": m["kind"],
            }
            for it in m["items"]
        )
    return out


@dataclass
class Replay:
    result: SimulationResult
    messages: list[dict[str, Any]]
    states: list[dict[str, Any]]
    submissions: list[dict[str, str]]

    def sent(self, **where: Any) -> list[dict[str, Any]]:
        """Sent items (one row per item of each bundle; digests whole) matching ``where``."""
        views = item_views(self.messages)
        return [m for m in views if all(m[k] == v for k, v in where.items())]

    def done_at(self, unit: str, obligation: str, period: str, quota: int) -> datetime | None:
        """When the unit's submissions for the period first reached ``quota`` (per the CSV)."""
        total = 0
        rows = [
            r
            for r in self.submissions
            if (r["unit"], r["obligation"], r["period"]) == (unit, obligation, period)
        ]
        for r in sorted(rows, key=lambda r: datetime.fromisoformat(r["at"])):
            total += int(r["count"] or 1)
            if total >= quota:
                return datetime.fromisoformat(r["at"])
        return None


def at(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(message["at"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def replay(
    tmp_path_factory: pytest.TempPathFactory,
    schedule_path: Path,
    contacts_dir: Path,
    templates_dir: Path,
) -> Replay:
    """The whole campaign replayed once for this module (about 45 s on 2 cores)."""
    out = tmp_path_factory.mktemp("simulation")
    settings = Settings(
        schedule=schedule_path,
        contacts=contacts_dir,
        templates=templates_dir,
        state_dir=out,
        database_url=None,
        channels_file=None,
    )
    result = asyncio.run(simulate(settings, START, END, out, SUBMISSIONS))
    with SUBMISSIONS.open(encoding="utf-8", newline="") as fh:
        submissions = list(csv.DictReader(fh))
    return Replay(
        result,
        read_jsonl(out / "messages.jsonl"),
        read_jsonl(out / "outbox-states.jsonl"),
        submissions,
    )


def liaisons(model: CampaignModel, unit: str) -> list[str]:
    return [p.id for p in model.directory.people_of(unit, "liaison")]


def test_registration_reminders_reach_exactly_the_liaisons_without_a_submission(
    replay: Replay,
    model: CampaignModel,
) -> None:
    """Those owing registration are reminded 05-18 and 05-22 09:00, never after submitting."""
    moments = [local("2023-05-18T09:00"), local("2023-05-22T09:00")]
    reminders = replay.sent(obligation="liaison-registration", kind="reminder", channel="email")
    got: dict[str, list[datetime]] = defaultdict(list)
    for m in reminders:
        got[m["units"][0]].append(at(m))
    for unit in model.owers["liaison-registration"]:
        done = replay.done_at(unit, "liaison-registration", "2023-05-22", 1)
        expected = [t for t in moments if done is None or t < done]
        assert sorted(got[unit]) == expected, unit
        assert {m["recipient"] for m in reminders if m["units"] == [unit]} == (
            set(liaisons(model, unit)) if expected else set()
        )
    assert got["changchun"] == []  # submitted 05-18 08:30, before any reminder
    assert got["yanbian"] == [moments[0]]  # submitted 05-19
    assert got["dept-education"] == [moments[0]]  # submitted 05-22 08:00
    assert sorted(got["baicheng"]) == moments  # never submitted
    assert all(t < local("2023-05-22T17:00") for ts in got.values() for t in ts)


def test_overdue_and_escalation_only_while_the_registration_is_owed(
    replay: Replay, model: CampaignModel
) -> None:
    """Overdue (05-23) and head escalation (05-24) reach only units still owing by then."""
    late = replay.sent(obligation="liaison-registration", channel="email")
    overdue = {m["units"][0] for m in late if m["kind"] == "overdue"}
    escalated = {m["units"][0] for m in late if m["kind"] == "escalation"}
    owers = set(model.owers["liaison-registration"])
    on_time = {"changchun", "yanbian", "dept-education"}
    assert overdue == owers - on_time  # nongan submitted 05-24 10:00: still overdue on 05-23
    assert escalated == owers - on_time  # and still late at 05-24 09:00
    assert {at(m) for m in late if m["kind"] == "overdue"} == {local("2023-05-23T09:00")}
    assert {at(m) for m in late if m["kind"] == "escalation"} == {local("2023-05-24T09:00")}
    heads = {m["recipient"] for m in late if m["kind"] == "escalation"}
    assert all(
        model.directory.people_of(m["units"][0], "head")[0].id == m["recipient"]
        for m in late
        if m["kind"] == "escalation"
    )
    assert len(heads) == len(escalated)


def test_weekly_w25_reminders_are_on_06_20_and_06_21(replay: Replay) -> None:
    """W25 (Fri 06-23 is the Dragon Boat holiday) is reminded 06-20/06-21, nothing 06-22..06-24."""
    weekly = replay.sent(obligation="weekly-progress")
    w25 = [
        m
        for m in weekly
        if m["periods"] == ["weekly-progress@2023-W25"] and m["kind"] == "reminder"
    ]
    assert w25
    assert {at(m).date() for m in w25} == {date(2023, 6, 20), date(2023, 6, 21)}
    assert not [m for m in weekly if date(2023, 6, 22) <= at(m).date() <= date(2023, 6, 24)]
    overdue = {
        at(m)
        for m in weekly
        if m["periods"] == ["weekly-progress@2023-W25"] and m["kind"] == "overdue"
    }
    assert overdue == {local("2023-06-25T09:00")}  # Sunday 06-25 is an adjusted working day


def test_weekly_reminders_follow_the_holiday_policy_for_every_week(
    replay: Replay, model: CampaignModel
) -> None:
    """Each week's reminders are the working day before its (shifted) due date and the due day."""
    cal = model.calendar
    for occ in (o for o in model.occurrences if o.obligation == "weekly-progress"):
        dates = {
            at(m).date()
            for m in replay.sent(obligation="weekly-progress", kind="reminder")
            if m["periods"] == [occ.key]
        }
        assert dates == {cal.add_workdays(occ.due_date, -1), occ.due_date}, occ.key
        assert all(cal.is_workday(d) for d in dates)


def test_weekly_reminders_stop_once_a_unit_submitted(replay: Replay, model: CampaignModel) -> None:
    """No weekly reminder or overdue reaches a unit after it submitted that week."""
    weekly = [m for m in replay.sent(obligation="weekly-progress") if m["kind"] != "digest"]
    for m in weekly:
        (occurrence,) = m["periods"]
        done = replay.done_at(m["units"][0], "weekly-progress", occurrence.partition("@")[2], 1)
        assert done is None or at(m) < done, m["key"]
    per_unit = Counter(m["units"][0] for m in weekly if m["channel"] == "email")
    assert per_unit["jilin-city"] == per_unit["dept-transport"] == 0  # always before the reminders
    assert per_unit["changchun"] == 6  # only the day-before reminder, six weeks
    assert per_unit["siping"] == 12  # both reminders, never overdue


def test_monthly_leads_reminders_stop_once_the_minimum_is_met(
    replay: Replay, model: CampaignModel
) -> None:
    """Reminders stop at quota.min (1), not the target (2); non-submitters are reminded monthly."""
    leads = [m for m in replay.sent(obligation="monthly-leads") if m["kind"] != "digest"]
    for m in leads:
        (occurrence,) = m["periods"]
        done = replay.done_at(m["units"][0], "monthly-leads", occurrence.partition("@")[2], 1)
        assert done is None or at(m) < done, m["key"]
    email = [m for m in leads if m["channel"] == "email"]
    assert not [m for m in email if m["units"] == ["jilin-city"]]  # once or twice, always early
    siping = {(m["period"], m["step"]) for m in email if m["units"] == ["siping"]}
    assert ("2023-06", "reminder1-5wd") in siping and ("2023-06", "reminder2-1wd") not in siping
    assert ("2023-07", "reminder2-1wd") in siping and ("2023-07", "overdue1-1wd") not in siping
    changchun_aug = {
        m["step"] for m in email if m["units"] == ["changchun"] and m["period"] == "2023-08"
    }
    assert changchun_aug == {
        "reminder1-5wd",
        "reminder2-1wd",
        "overdue1-1wd",
    }  # submitted 09-01 10:00
    baicheng = Counter(
        m["period"] for m in email if m["units"] == ["baicheng"] and m["kind"] == "reminder"
    )
    assert baicheng == {f"2023-{month:02d}": 2 for month in range(6, 13)}


def test_one_digest_per_supervisor_per_slot(replay: Replay, model: CampaignModel) -> None:
    """Digests go out at 09:30 on working days, at most one per supervisor and slot."""
    digests = replay.sent(kind="digest")
    assert digests
    per_slot = Counter((m["at"], m["recipient"], m["channel"]) for m in digests)
    assert set(per_slot.values()) == {1}
    supervisors = {p.id for p in model.directory.supervisors()}
    assert {m["recipient"] for m in digests} == supervisors
    assert {at(m).timetz().replace(tzinfo=None) for m in digests} == {time(9, 30)}
    assert all(model.calendar.is_workday(at(m).date()) for m in digests)
    province = sorted(at(m).date() for m in digests if m["recipient"] == "jilin-office-a")
    assert province[0] == date(2023, 5, 23)  # the first late registrations


def test_a_digest_goes_out_only_when_its_list_changed(replay: Replay) -> None:
    """Cadence "changes" (shipped): each digest after the first names something new or
    resolved; the unchanged ones are cancelled with that reason (154 → about a dozen)."""
    digests = [m for m in replay.messages if m["kind"] == "digest"]
    per_person = Counter(m["recipient"] for m in digests)
    assert max(per_person.values()) <= 20
    for m in digests:
        if "自上次汇总以来" in m["body"]:
            assert "新增逾期0项，已报送0项" not in m["body"], m["key"]
    unchanged = [
        s for s in replay.states if s["reason"].endswith("unchanged since the last digest")
    ]
    assert unchanged and {s["status"] for s in unchanged} == {"cancelled"}


def test_digests_list_only_units_in_the_supervisors_scope(
    replay: Replay, model: CampaignModel
) -> None:
    """A supervisor's digest names units of its own subtree only; regions never see departments."""
    units = model.directory.units
    scope = {p.id: p.scope for p in model.directory.supervisors()}
    for m in replay.sent(kind="digest"):
        subtree = set(model.directory.subtree(scope[m["recipient"]] or ""))
        assert set(m["units"]) <= subtree, m["key"]
        assert f"/{scope[m['recipient']]}/digest/" in m["key"]
        if units[scope[m["recipient"]] or ""].kind == "region":
            assert {units[u].kind for u in m["units"]} <= {"region", "county"}, m["key"]
            assert not any(
                units[u].name in m["body"]
                for u in units
                if units[u].kind in ("department", "enterprise")
            )
    changchun = {
        m["at"][:10]: set(m["units"])
        for m in replay.sent(kind="digest", recipient="changchun-supervisor")
    }
    assert changchun["2023-05-23"] == {"nongan", "yushu", "dehui"}  # changchun itself registered
    assert changchun["2023-05-25"] == {"yushu", "dehui"}  # nongan registered 05-24 10:00


def test_no_sms_outside_the_sending_window(replay: Replay, model: CampaignModel) -> None:
    """Every SMS is sent between 08:00 and 20:00 local time on a working day."""
    sms = replay.sent(channel="sms")
    assert sms
    for m in sms:
        moment = at(m).astimezone(SHANGHAI)
        assert time(8, 0) <= moment.time() < time(20, 0), m["key"]
        assert model.calendar.is_workday(moment.date()), m["key"]


def test_no_recipient_gets_more_sms_a_day_than_the_cap(
    replay: Replay, model: CampaignModel
) -> None:
    """At most sms_daily_cap (2) SMS per recipient per day."""
    sms = [m for m in replay.messages if m["channel"] == "sms"]
    per_day = Counter((m["recipient"], at(m).date()) for m in sms)
    assert max(per_day.values()) <= model.schedule.campaign.sms_daily_cap == 2


def test_no_two_messages_share_a_key(replay: Replay) -> None:
    """Idempotency keys are unique among sent messages and in the outbox."""
    keys = [m["key"] for m in replay.messages]
    assert len(keys) == len(set(keys))
    all_keys = [s["key"] for s in replay.states]
    assert len(all_keys) == len(set(all_keys))
    assert set(keys) <= set(all_keys)


def test_nothing_is_sent_after_the_campaign_end_but_the_final_notice(
    replay: Replay, model: CampaignModel
) -> None:
    """Nothing after 12-29 (12-30..01-01 are holidays); the campaign-end notice goes out 12-29."""
    assert max(at(m) for m in replay.messages) < END
    assert max(at(m).date() for m in replay.messages) == date(2023, 12, 29)
    notices = replay.sent(obligation="campaign-end", channel="email")
    assert {at(m) for m in notices} == {local("2023-12-29T09:00")}
    assert {m["kind"] for m in notices} == {"notice"}
    assert {m["units"][0] for m in notices} == set(model.owers["campaign-end"])


def test_every_message_kind_is_known(replay: Replay) -> None:
    """Every sent message is a reminder, overdue, escalation, digest or notice (and each occurs)."""
    assert {m["kind"] for m in replay.messages} == KINDS


def test_every_outbox_row_is_in_a_final_state(replay: Replay) -> None:
    """No message is left pending or sending; every non-sent one carries a reason."""
    assert replay.states
    for s in replay.states:
        assert s["status"] in FINAL, s["key"]
        assert bool(s["reason"]) == (s["status"] != "sent"), s["key"]
    assert sum(replay.result.states.values()) == len(replay.states)
    assert replay.result.states.get("sent") == len(replay.messages)


def test_no_recipient_gets_two_messages_on_one_channel_at_one_moment(replay: Replay) -> None:
    """Bundling: no (recipient, channel, moment) carries more than one message, sent or not."""
    sent = Counter((m["recipient"], m["channel"], m["at"]) for m in replay.messages)
    assert max(sent.values()) == 1
    planned = Counter(
        (s["recipient"], s["channel"], s["due"]) for s in replay.states if s["status"] != "stale"
    )
    assert max(planned.values()) == 1
    assert max(len(m["items"]) for m in replay.messages) >= 4  # 06-25: W25 overdue + three


def test_no_overdue_or_escalation_sms_is_cancelled_by_the_cap(replay: Replay) -> None:
    """Urgent beats early: no overdue/escalation SMS ends cancelled by the daily cap."""
    urgent_sms = [
        s for s in replay.states if s["channel"] == "sms" and s["kind"] in ("overdue", "escalation")
    ]
    assert urgent_sms
    assert not [s for s in urgent_sms if "cap" in s["reason"] and s["status"] != "sent"]


def test_no_message_says_zero_days_overdue(replay: Replay) -> None:
    """Days late read "今日到期" / "逾期不足1天" / "逾期N个工作日", never "逾期0天"."""
    assert not [m["key"] for m in replay.messages if "逾期0天" in (m["body"] or "")]
    assert any("逾期不足1天" in (m["body"] or "") for m in replay.messages)


def test_the_campaign_end_notice_reads_right(replay: Replay) -> None:
    """The end notice names the event and its time, never "活动结束将于…举行"."""
    notices = [
        m for m in replay.sent(obligation="campaign-end", channel="email") if m["kind"] == "notice"
    ]
    assert notices
    for m in notices:
        assert "举行" not in m["body"] and "举行" not in m["subject"]
        assert "“白山松水安全行”活动结束" in m["body"]
        assert "时间：12月31日（星期日）17:00" in m["body"]


def test_messages_jsonl_rows_list_their_items(replay: Replay) -> None:
    """Each messages.jsonl row lists items {obligation, period, unit, step}; kind = most urgent."""
    rank = {"escalation": 0, "overdue": 1, "reminder": 2, "notice": 3}
    for m in replay.messages:
        assert m["items"], m["key"]
        assert all(set(it) == {"obligation", "period", "unit", "step"} for it in m["items"])
        if m["kind"] != "digest":
            kinds = [re.match(r"[a-z]+", it["step"]).group(0) for it in m["items"]]  # type: ignore[union-attr]
            assert m["kind"] == min(kinds, key=rank.__getitem__), m["key"]
