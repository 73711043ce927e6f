"""Synthetic national directory and submissions history (seeded, reproducible).

31 provinces → regions → counties, plus departments and enterprises under each province,
each unit with a liaison and a head, each province and region with a supervisor.
``python -m bench.generate --units 100000 --out /tmp/national`` writes units.csv,
people.csv and submissions.csv for the shipped 2023 schedule.
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import timedelta
from pathlib import Path

PROVINCES = 31


def plan_units(total: int, rng: random.Random) -> list[tuple[str, str, str, str, str]]:
    """(id, name, kind, parent, tags) rows, about ``total`` of them."""
    rows = [("cn", "国务院安委会办公室", "province", "", "national")]
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
        for c in range(counties):
            rows.append((f"{pid}-c{c:04d}", f"第{p + 1}省第{c + 1}县安委办", "county",
                         f"{pid}-r{c % regions:02d}", ""))
        departments = max(0, int(budget * 0.1))
        for d in range(departments):
            rows.append((f"{pid}-d{d:04d}", f"第{p + 1}省第{d + 1}厅局", "department", pid, "member-unit"))
        enterprises = budget - counties - departments
        for e in range(enterprises):
            rows.append((f"{pid}-e{e:05d}", f"第{p + 1}省第{e + 1}企业", "enterprise",
                         f"{pid}-r{e % regions:02d}", "soe"))
    return rows[:total]


def people_for(units: list[tuple[str, str, str, str, str]]) -> list[tuple[str, ...]]:
    out = []
    n = 0
    for uid, _name, kind, _parent, _tags in units:
        for role in ("liaison", "head"):
            n += 1
            mobile = f"+86138{n % 10**8:08d}" if role == "liaison" else ""
            out.append((f"{uid}-{role}", f"联络员{n}", uid, role, "", f"{uid}-{role}@example.org", mobile))
        if kind in ("province", "region") and not uid.count("-c"):
            out.append((f"{uid}-supervisor", f"督导{uid}", uid, "supervisor", uid, f"{uid}-sup@example.org", ""))
    return out


def write_directory(out: Path, total: int, seed: int = 7) -> list[tuple[str, str, str, str, str]]:
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


def submissions(model: object, seed: int = 11, on_time: float = 0.8, late: float = 0.1):  # type: ignore[no-untyped-def]
    """Yield (unit, obligation, period, count, at) for a model: most on time, some late, some never."""
    rng = random.Random(seed)
    for occ in model.submittable():  # type: ignore[attr-defined]
        for unit in model.owers[occ.obligation]:  # type: ignore[attr-defined]
            r = rng.random()
            if r < on_time:
                at = occ.due_at - timedelta(hours=rng.randint(2, 72))
            elif r < on_time + late:
                at = occ.due_at + timedelta(days=rng.randint(1, 10))
            else:
                continue
            yield unit, occ.obligation, occ.period, 2 if occ.quota_goal > 1 and r < 0.4 else 1, at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    units = write_directory(args.out, args.units, args.seed)
    print(f"{len(units)} units written to {args.out}")


if __name__ == "__main__":
    main()
