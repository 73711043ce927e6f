"""Issue 12 point 5 and issue 9 item 6: the operator's views of the ledger and outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.cli.messages import waiting
from service.model import CampaignModel

from .conftest import Invoke, ok

W25 = ["--unit", "yanji", "--obligation", "weekly-progress", "--period", "2023-W25"]


def rows_of(cli: Invoke, *args: str) -> list[dict[str, Any]]:
    payload = json.loads(ok(cli(*args, "--json")).stdout)
    rows: list[dict[str, Any]] = payload["rows"]
    return rows


def test_late_submission_is_marked(cli: Invoke) -> None:
    """A submission after the deadline shows 补报 with its days late (JSON: late_days)."""
    ok(cli("submit", *W25, "--at", "2023-06-23T10:00"))  # due 06-21 17:00
    [row] = [r for r in rows_of(cli, "status", "--unit", "yanji", "--at", "2023-06-26T09:00")
             if r["period"] == "2023-W25"]  # fmt: skip
    assert (row["state"], row["late_days"]) == ("done", 2)
    table = ok(cli("status", "--unit", "yanji", "--at", "2023-06-26T09:00")).stdout
    assert "已完成（补报，晚 2 天）" in table


def test_on_time_submission_is_not_marked(cli: Invoke) -> None:
    """A submission before the deadline has no late mark."""
    ok(cli("submit", *W25, "--at", "2023-06-20T10:00"))
    [row] = [r for r in rows_of(cli, "status", "--unit", "yanji", "--at", "2023-06-26T09:00")
             if r["period"] == "2023-W25"]  # fmt: skip
    assert row["late_days"] is None and not row["over_count"]


def test_over_count_is_marked(cli: Invoke) -> None:
    """Two submissions against a target of one are marked 超额."""
    ok(cli("submit", *W25, "--at", "2023-06-20T10:00"))
    ok(cli("submit", *W25, "--at", "2023-06-20T11:00"))
    [row] = [r for r in rows_of(cli, "status", "--unit", "yanji", "--at", "2023-06-26T09:00")
             if r["period"] == "2023-W25"]  # fmt: skip
    assert row["over_count"] is True
    assert "2/1 超额" in ok(cli("status", "--unit", "yanji", "--at", "2023-06-26T09:00")).stdout


def test_status_lists_a_period_due_before_its_nominal_start(
    cli: Invoke, schedule_path: Path, write_schedule: Any
) -> None:
    """Week 40 of 2023, due 09-28 (before National Day, before the week starts), is overdue
    at 09-29 10:00 in status and in overdue (issue 9 item 6)."""
    text = schedule_path.read_text(encoding="utf-8").replace(
        "start: 2023-05-26, end: 2023-06-30}", "start: 2023-05-26, end: 2023-10-31}"
    )
    autumn = write_schedule(text)
    at = ["--at", "2023-09-29T10:00", "--json"]
    payload = json.loads(ok(cli("status", "--unit", "yanji", *at, schedule=autumn)).stdout)
    w40 = [r for r in payload["rows"] if r["period"] == "2023-W40"]
    assert [(r["due"], r["state"]) for r in w40] == [("2023-09-28T17:00:00+08:00", "overdue")]
    late = json.loads(ok(cli("overdue", "--scope", "yanji", *at, schedule=autumn)).stdout)
    periods = {u["period"] for g in late["obligations"] for u in g["units"]}
    assert "2023-W40" in periods


def test_status_accepts_a_unit_by_name(cli: Invoke) -> None:
    """--unit takes a unit's name as well as its id."""
    rows = rows_of(cli, "status", "--unit", "延吉市安委会办公室", "--at", "2023-06-26T09:00")
    assert {r["unit"] for r in rows} == {"yanji"}


def test_audit_lists_submissions_and_retractions(cli: Invoke) -> None:
    """audit --unit shows each submission with source, recorder and retraction."""
    ok(cli("submit", *W25, "--at", "2023-06-20T10:00", "--actor", "王芳"))
    ok(cli("retract", *W25, "--reason", "填错"))
    payload = json.loads(ok(cli("audit", "--unit", "yanji", "--json")).stdout)
    [item] = payload["submissions"]
    assert (item["unit"], item["recorded_by"], item["source"]) == ("yanji", "王芳", "admin")
    assert item["submitted_at"] == "2023-06-20T10:00:00+08:00"
    assert item["retracted_at"] is not None
    assert "已撤销" in ok(cli("audit", "--unit", "yanji")).stdout


def test_waiting_sms_says_what_it_waits_for(model: CampaignModel) -> None:
    """A pending SMS planned for the evening says it waits for the sending window."""
    row = {
        "status": "pending",
        "channel": "sms",
        "due_at": datetime(2023, 6, 20, 13, 0, tzinfo=UTC),  # 21:00 +08:00
        "next_attempt_at": datetime(2023, 6, 21, 0, 0, tzinfo=UTC),  # 08:00 +08:00
    }
    assert waiting(row, model) == "等待短信发送时段，2023-06-21T08:00:00+08:00 发送"


@pytest.fixture(scope="module")
def replay_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state folder for the replayed views (they only read it)."""
    return tmp_path_factory.mktemp("replay") / "state"


class TestReplayed:
    """Views over one short replay (06-19 → 06-22), shared read-only by these tests."""

    @pytest.fixture
    def state_dir(self, replay_state: Path) -> Path:
        return replay_state

    @pytest.fixture
    def replayed(self, cli: Invoke, replay_state: Path) -> Invoke:
        if not (replay_state / "service.db").exists():
            ok(cli("submit", *W25, "--at", "2023-06-20T10:00"))
            ok(cli("run", "--virtual-from", "2023-06-19T08:00", "--until", "2023-06-22T00:00",
                   "--log-level", "WARNING"))  # fmt: skip
        return cli

    def messages(self, cli: Invoke, *args: str) -> list[dict[str, Any]]:
        payload = json.loads(ok(cli("messages", "--json", "--limit", "100000", *args)).stdout)
        items: list[dict[str, Any]] = payload["messages"]
        return items

    def test_filters_narrow_the_list(self, replayed: Invoke) -> None:
        """--person, --obligation, --status and --unit each keep only matching messages."""
        everything = self.messages(replayed)
        assert len(everything) > 20
        mine = self.messages(replayed, "--person", "changchun-liaison")
        assert mine and {m["recipient"] for m in mine} == {"changchun-liaison"}
        sent = self.messages(replayed, "--status", "sent", "--obligation", "weekly-progress")
        assert sent and {m["status"] for m in sent} == {"sent"}
        assert all("weekly-progress" in m["obligations"] for m in sent)
        yanji = self.messages(replayed, "--unit", "yanji")
        assert yanji and all("yanji" in m["units"] for m in yanji)
        assert len(yanji) < len(everything)

    def test_since_until_bound_the_planned_moment(self, replayed: Invoke) -> None:
        """--since/--until keep messages planned in [since, until)."""
        got = self.messages(replayed, "--since", "2023-06-20T00:00", "--until", "2023-06-21T00:00")
        assert got and all("2023-06-20" in m["due"] for m in got)

    def test_limit_keeps_the_latest(self, replayed: Invoke) -> None:
        """--limit 3 keeps the three latest by planned moment."""
        everything = self.messages(replayed)
        assert self.messages(replayed, "--limit", "3") == everything[-3:]

    def test_states_and_reasons_are_chinese(self, replayed: Invoke) -> None:
        """The table shows 已发送/已取消 and a translated reason, never a Python dict."""
        out = ok(replayed("messages", "--limit", "100000")).stdout
        assert "已发送" in out and "按状态统计：已发送" in out
        assert "{'" not in out and "reason disappeared" not in out

    def test_show_prints_the_message_and_its_attempts(self, replayed: Invoke) -> None:
        """show KEY prints the rendered text and every attempt."""
        [first] = self.messages(replayed, "--status", "sent", "--limit", "1")
        payload = json.loads(ok(replayed("show", first["key"], "--json")).stdout)
        assert payload["key"] == first["key"] and payload["status"] == "sent"
        assert payload["attempts"] and payload["attempts"][-1]["outcome"] == "sent"
        out = ok(replayed("show", first["key"])).stdout
        assert "已发送" in out and "发送尝试（" in out

    def test_show_unknown_key_is_refused(self, replayed: Invoke) -> None:
        """show of a key that does not exist exits 1."""
        result = replayed("show", "no/such/key")
        assert result.exit_code == 1 and "no/such/key" in result.stderr

    def test_preview_skips_what_is_final_and_shows_names(self, replayed: Invoke) -> None:
        """preview at a moment already replayed lists nothing final, and names not ids."""
        payload = json.loads(ok(replayed("preview", "--at", "2023-06-20T08:59", "--json")).stdout)
        sent = {m["key"] for m in self.messages(replayed) if m["status"] != "pending"}
        assert payload["already_final"] > 0
        assert not {m["key"] for m in payload["messages"]} & sent
        out = ok(replayed("preview", "--at", "2023-06-21T23:00")).stdout
        assert "下一批" in out
