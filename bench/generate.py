"""Synthetic national directory and submissions history (seeded, reproducible).

31 provinces → regions → counties, plus departments and enterprises under each province,
each unit with a liaison and a head, each province and region with a supervisor.
``python -m bench.generate --units 100000 --out /tmp/national`` writes units.csv,
people.csv and submissions.csv for the shipped 2023 schedule.

The history can also go straight into PostgreSQL (:func:`load_submissions_pg`, one COPY)
for the planning benchmark, or into a CSV for ``service import`` / ``service simulate``.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROVINCES = 31
SCHEDULE = Path(__file__).resolve().parent.parent / "schedules" / "jilin-2023.yaml"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

Unit = tuple[str, str, str, str, str]
Submission = tuple[str, str, str, int, datetime]


def plan_units(total: int, rng: random.Random) -> list[Unit]:
    """(id, name, kind, parent, tags) rows, about ``total`` of them."""
    rows: list[Unit] = [("cn", "国务院安委会办公室", "province", "", "national")]
    per_province = max(4, (total - 1) // PROVINCES)
    for p in range(PROVINCES):
        pid = f"p{p:02d}"
        rows.append((pid, f"第{p + 1}省安委会办公室", "region", "cn", "province"))
        budget = per_province - 1
        regions = max(1, budget // 60)
        for r in range(regions):
            rid = f"{pid}-r{r:02d}"
            rows.append((rid, f"第{p + 1}省第{r + 1}市安委办", "region", pid, "prefecture"))
            budget -= 1
        counties = max(0, int(budget * 0.3))
        rows.extend(
            (
                f"{pid}-c{c:04d}",
                f"第{p + 1}省第{c + 1}县安委办",
                "county",
                f"{pid}-r{c % regions:02d}",
                "",
            )
            for c in range(counties)
        )
        departments = max(0, int(budget * 0.1))
        rows.extend(
            (f"{pid}-d{d:04d}", f"第{p + 1}省第{d + 1}厅局", "department", pid, "member-unit")
            for d in range(departments)
        )
        enterprises = budget - counties - departments
        rows.extend(
            (
                f"{pid}-e{e:05d}",
                f"第{p + 1}省第{e + 1}企业",
                "enterprise",
                f"{pid}-r{e % regions:02d}",
                "soe",
            )
            for e in range(enterprises)
        )
    return rows[:total]


def people_for(units: list[Unit]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    n = 0
    for uid, _name, kind, _parent, _tags in units:
        for role in ("liaison", "head"):
            n += 1
            mobile = f"+86138{n % 10**8:08d}" if role == "liaison" else ""
            email = f"{uid}-{role}@example.org"
            out.append((f"{uid}-{role}", f"联络员{n}", uid, role, "", email, mobile))
        if kind in ("province", "region") and not uid.count("-c"):
            email = f"{uid}-sup@example.org"
            out.append((f"{uid}-supervisor", f"督导{uid}", uid, "supervisor", uid, email, ""))
    return out


def write_directory(out: Path, total: int, seed: int = 7) -> list[Unit]:
    rng = random.Random(seed)
    units = plan_units(total, rng)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "units.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "kind", "parent", "tags"])
        w.writerows(units)
    with (out / "people.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "unit", "role", "scope", "email", "mobile"])
        w.writerows(people_for(units))
    return units


def submissions(
    model: Any, seed: int = 11, on_time: float = 0.8, late: float = 0.1
) -> Iterator[Submission]:
    """(unit, obligation, period, count, at) for a model: most on time, some late, some never."""
    rng = random.Random(seed)
    for occ in model.submittable():
        for unit in model.owers[occ.obligation]:
            r = rng.random()
            if r < on_time:
                at = occ.due_at - timedelta(hours=rng.randint(2, 72))
            elif r < on_time + late:
                at = occ.due_at + timedelta(days=rng.randint(1, 10))
            else:
                continue
            yield unit, occ.obligation, occ.period, 2 if occ.quota_goal > 1 and r < 0.4 else 1, at


def write_submissions_csv(model: Any, path: Path, seed: int = 11) -> int:
    """The history as ``unit,obligation,period,count,at`` (``service import`` / ``simulate``)."""
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["unit", "obligation", "period", "count", "at"])
        for unit, obligation, period, count, at in submissions(model, seed):
            w.writerow([unit, obligation, period, count, at.isoformat()])
            n += 1
    return n


SUBMISSION_COLUMNS = (
    "campaign",
    "unit_id",
    "obligation",
    "period",
    "count",
    "submitted_at",
    "recorded_at",
    "source",
    "recorded_by",
)


async def load_submissions_pg(conn: Any, model: Any, seed: int = 11) -> int:
    """COPY the history into ``submissions`` of a migrated schema (an asyncpg connection).

    The indexes are dropped for the load and rebuilt after it (same definitions),
    which is several times faster than maintaining it row by row.
    """
    now = datetime.now(UTC)
    campaign = model.key
    records = [
        (campaign, unit, obligation, period, count, at, now, "import", "bench")
        for unit, obligation, period, count, at in submissions(model, seed)
    ]
    await conn.execute("DROP INDEX IF EXISTS ix_submissions_occurrence")
    await conn.execute("DROP INDEX IF EXISTS ix_submissions_unit")
    tally = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_submissions_tally'"
    )  # migration 0008 (absent in schemas migrated to an earlier revision)
    await conn.execute("DROP INDEX IF EXISTS ix_submissions_tally")
    await conn.copy_records_to_table(
        "submissions", records=records, columns=list(SUBMISSION_COLUMNS)
    )
    await conn.execute(
        "CREATE INDEX ix_submissions_occurrence"
        " ON submissions (campaign, obligation, period, unit_id)"
    )
    await conn.execute("CREATE INDEX ix_submissions_unit ON submissions (campaign, unit_id)")
    if tally:
        await conn.execute(tally)
    # as autovacuum would soon after a bulk insert: statistics and the visibility map
    # (index-only scans skip the heap only for all-visible pages)
    await conn.execute("VACUUM ANALYZE submissions")
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-submissions", action="store_true", help="only the directory (faster)")
    args = parser.parse_args()
    units = write_directory(args.out, args.units, args.seed)
    print(f"{len(units)} units written to {args.out}")
    if not args.no_submissions:
        from service.model import load_model

        model = load_model(SCHEDULE, args.out)
        n = write_submissions_csv(model, args.out / "submissions.csv")
        print(f"{n} submissions written to {args.out / 'submissions.csv'}")


if __name__ == "__main__":
    main()
