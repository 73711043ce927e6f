"""The submissions ledger on SQLite and PostgreSQL: record, count, retract, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.errors import LedgerError
from service.model import CampaignModel
from service.status import state_of
from service.store.db import current_revision, migrate
from service.store.ledger import Ledger
from service.store.tables import submissions
from service.submissions import NewSubmission

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def sub(
    unit: str = "changchun",
    obligation: str = "weekly-progress",
    period: str = "2023-W25",
    count: int = 1,
    when: str = "2023-06-20T10:00",
) -> NewSubmission:
    return NewSubmission(unit, obligation, period, count, at(when))


async def test_record_returns_ids_and_counts_by_occurrence(ledger: Ledger) -> None:
    """Recorded submissions are summed per (unit, obligation, period)."""
    ids = await ledger.record(
        [sub(), sub(count=2), sub(unit="yanji"), sub(period="2023-W24")], actor="admin"
    )
    assert len(ids) == 4
    assert len(set(ids)) == 4
    assert await ledger.counts() == {
        ("changchun", "weekly-progress", "2023-W25"): 3,
        ("yanji", "weekly-progress", "2023-W25"): 1,
        ("changchun", "weekly-progress", "2023-W24"): 1,
    }
    assert await ledger.count_of("changchun", "weekly-progress", "2023-W25") == 3
    assert await ledger.count_of("siping", "weekly-progress", "2023-W25") == 0


async def test_counts_as_of_ignores_later_submissions(ledger: Ledger) -> None:
    """counts(as_of) only includes submissions made by that moment."""
    await ledger.record([sub(when="2023-06-20T10:00"), sub(when="2023-06-22T10:00")], "admin")
    key = ("changchun", "weekly-progress", "2023-W25")
    assert (await ledger.counts(as_of=at("2023-06-21T00:00")))[key] == 1
    assert (await ledger.counts(as_of=at("2023-06-22T10:00")))[key] == 2


async def test_counts_for_limits_to_units(ledger: Ledger) -> None:
    """counts_for only returns the requested units."""
    await ledger.record([sub(), sub(unit="yanji"), sub(unit="siping")], "admin")
    assert set(await ledger.counts_for(["yanji", "siping"])) == {
        ("yanji", "weekly-progress", "2023-W25"),
        ("siping", "weekly-progress", "2023-W25"),
    }
    assert await ledger.counts_for([]) == {}


async def test_other_campaign_is_invisible(
    migrated_engine: AsyncEngine, clock: VirtualClock, ledger: Ledger
) -> None:
    """A ledger only sees its own campaign's submissions."""
    other = Ledger(migrated_engine, "jilin-2024", clock)
    await other.record([sub()], "admin")
    assert await ledger.counts() == {}
    assert await other.counts() == {("changchun", "weekly-progress", "2023-W25"): 1}


async def test_count_table_matches_counts(
    migrated_engine: AsyncEngine, clock: VirtualClock, ledger: Ledger, model: CampaignModel
) -> None:
    """The planner's count table sums repeats, skips retractions, other campaigns, later rows."""
    await ledger.record(
        [
            sub(),
            sub(count=2, when="2023-06-21T10:00"),
            sub(unit="yanji"),
            sub(period="2023-W24", when="2023-06-13T10:00"),
            sub(unit="siping", when="2023-06-23T10:00"),
        ],
        "admin",
    )
    await ledger.retract("yanji", "weekly-progress", "2023-W25", "admin")
    await Ledger(migrated_engine, "jilin-2024", clock).record([sub(unit="siping")], "admin")
    index = {unit: i for i, unit in enumerate(model.directory.units)}
    for as_of in (None, at("2023-06-22T00:00")):
        table = await ledger.count_table(index, as_of=as_of)
        expected = await ledger.counts(as_of=as_of)
        keys = {(u, "weekly-progress", p) for u in index for p in ("2023-W24", "2023-W25")}
        assert {k: table.get(k) for k in keys if table.get(k)} == expected
    assert (await ledger.count_table(index)).get(("changchun", "weekly-progress", "2023-W25")) == 3


async def test_quota_one_of_two_is_done(ledger: Ledger, model: CampaignModel) -> None:
    """monthly-leads (min 1, target 2): one submission is done, progress 1/2."""
    occ = model.occurrence("monthly-leads", "2023-07")
    assert occ is not None
    await ledger.record([sub(obligation="monthly-leads", period="2023-07")], "admin")
    count = await ledger.count_of("changchun", "monthly-leads", "2023-07")
    assert (count, occ.quota_min, occ.quota_goal) == (1, 1, 2)
    assert state_of(occ, count, occ.due_at + timedelta(days=3)) == "done"


async def test_quota_zero_is_outstanding_then_overdue(ledger: Ledger, model: CampaignModel) -> None:
    """monthly-leads with no submission: outstanding until due, overdue after."""
    occ = model.occurrence("monthly-leads", "2023-07")
    assert occ is not None
    await ledger.record([sub(obligation="monthly-leads", period="2023-07", unit="yanji")], "a")
    count = await ledger.count_of("changchun", "monthly-leads", "2023-07")
    assert count == 0
    assert state_of(occ, count, occ.due_at) == "outstanding"
    assert state_of(occ, count, occ.due_at + timedelta(seconds=1)) == "overdue"


async def test_retract_reopens_occurrence(ledger: Ledger, model: CampaignModel) -> None:
    """Retracting the only submission makes the occurrence owed again."""
    occ = model.occurrence("weekly-progress", "2023-W25")
    assert occ is not None
    [sid] = await ledger.record([sub()], "admin")
    retracted = await ledger.retract("changchun", "weekly-progress", "2023-W25", "admin")
    assert retracted == [sid]
    count = await ledger.count_of("changchun", "weekly-progress", "2023-W25")
    assert count == 0
    assert await ledger.counts() == {}
    assert state_of(occ, count, occ.due_at + timedelta(hours=1)) == "overdue"
    [row] = await ledger.history()
    assert row.retracted_at is not None


async def test_retract_takes_latest_only(ledger: Ledger) -> None:
    """Without --all a retraction removes only the latest active submission."""
    first, second = await ledger.record(
        [sub(when="2023-06-19T10:00"), sub(when="2023-06-20T10:00")], "admin"
    )
    assert await ledger.retract("changchun", "weekly-progress", "2023-W25", "admin") == [second]
    assert await ledger.count_of("changchun", "weekly-progress", "2023-W25") == 1
    assert await ledger.retract("changchun", "weekly-progress", "2023-W25", "admin") == [first]


async def test_retract_everything(ledger: Ledger) -> None:
    """everything=True retracts every active submission of the occurrence."""
    ids = await ledger.record([sub(), sub(), sub(unit="yanji")], "admin")
    retracted = await ledger.retract(
        "changchun", "weekly-progress", "2023-W25", "admin", everything=True
    )
    assert sorted(retracted) == ids[:2]
    assert await ledger.counts() == {("yanji", "weekly-progress", "2023-W25"): 1}


async def test_retract_nothing_raises_and_writes_nothing(ledger: Ledger) -> None:
    """Retracting when nothing is active raises LedgerError and changes nothing."""
    await ledger.record([sub(unit="yanji")], "admin")
    history, trail = await ledger.history(), await ledger.audit_trail()
    with pytest.raises(LedgerError, match=r"no active submission of weekly-progress@2023-W25"):
        await ledger.retract("changchun", "weekly-progress", "2023-W25", "admin")
    assert await ledger.history() == history
    assert await ledger.audit_trail() == trail


async def test_retract_unknown_id_raises(ledger: Ledger) -> None:
    """Retracting by an id that is not this unit's active submission is refused."""
    [sid] = await ledger.record([sub(unit="yanji")], "admin")
    with pytest.raises(LedgerError, match=f"with id {sid}"):
        await ledger.retract("changchun", "weekly-progress", "2023-W25", "a", submission_id=sid)
    assert await ledger.count_of("yanji", "weekly-progress", "2023-W25") == 1


async def test_audit_trail_records_submit_and_retract(ledger: Ledger, clock: VirtualClock) -> None:
    """Submit and retract each leave an audit row with actor, action and time."""
    [sid] = await ledger.record([sub()], actor="liu.chang")
    clock.set(at("2023-06-21T08:00"))
    await ledger.retract(
        "changchun", "weekly-progress", "2023-W25", "zhang.shuai", reason="wrong form"
    )
    trail = await ledger.audit_trail()
    assert [(r["action"], r["actor"], r["subject"]) for r in trail] == [
        ("submit", "liu.chang", f"submission:{sid}"),
        ("retract", "zhang.shuai", f"submission:{sid}"),
    ]
    assert trail[0]["at"] == at("2023-05-18T09:00")
    assert trail[1]["at"] == at("2023-06-21T08:00")
    assert trail[0]["detail"]["unit"] == "changchun"
    assert trail[0]["detail"]["at"] == "2023-06-20T10:00:00+08:00"
    assert trail[1]["detail"] == {"reason": "wrong form"}


async def test_timestamps_round_trip_as_utc(ledger: Ledger, clock: VirtualClock) -> None:
    """Stored times come back as the same instant, aware and in UTC."""
    await ledger.record([sub(when="2023-06-23T17:00")], "admin")
    await ledger.retract("changchun", "weekly-progress", "2023-W25", "admin")
    [row] = await ledger.history()
    assert row.submitted_at == datetime(2023, 6, 23, 9, 0, tzinfo=UTC)
    assert row.retracted_at == clock.now()
    for moment in (
        row.submitted_at,
        row.retracted_at,
        *(r["at"] for r in await ledger.audit_trail()),
    ):
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)


async def test_naive_datetime_is_refused(ledger: Ledger) -> None:
    """A naive submission time is never stored; nothing is written."""
    naive_at = datetime(2023, 6, 20)  # noqa: DTZ001 - naive on purpose
    naive = NewSubmission("changchun", "weekly-progress", "2023-W25", 1, naive_at)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await ledger.record([sub(unit="yanji"), naive], "admin")
    assert await ledger.history() == []
    assert await ledger.audit_trail() == []


async def test_history_filters_by_unit(ledger: Ledger) -> None:
    """history(unit) lists only that unit's submissions, in id order."""
    await ledger.record([sub(), sub(unit="yanji"), sub(period="2023-W24")], "clerk")
    rows = await ledger.history("changchun")
    assert [(r.unit, r.period, r.recorded_by, r.source) for r in rows] == [
        ("changchun", "2023-W25", "clerk", "admin"),
        ("changchun", "2023-W24", "clerk", "admin"),
    ]


async def test_migrate_is_idempotent(migrated_engine: AsyncEngine, ledger: Ledger) -> None:
    """Running migrate() again keeps the revision and the data."""
    await ledger.record([sub()], "admin")
    before = await current_revision(migrated_engine)
    await migrate(migrated_engine)
    await migrate(migrated_engine)
    assert await current_revision(migrated_engine) == before == "0008"
    async with migrated_engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(submissions))).scalar_one()
    assert n == 1


async def test_migrations_build_the_declared_schema(migrated_engine: AsyncEngine) -> None:
    """The migrated tables, columns and indexes are exactly those of store/tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.store.tables import metadata

    def diff(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync_conn)
        return list(compare_metadata(context, metadata))

    async with migrated_engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_fresh_database_has_no_revision(engine: AsyncEngine) -> None:
    """Before migrate() there is no schema revision."""
    assert await current_revision(engine) is None
