"""Peak memory of ``service import`` on a large submissions file (issue 8 item 10).

Target: peak RSS ≤ 200 MB for a 1,000,000-row import, all or nothing. Baselines measured in
the same run: a bare ``csv.reader`` pass over the same file, and ``service validate`` (the
CLI's fixed cost: interpreter, libraries, the campaign model).

    .venv/bin/python -m bench.import_rss                 # 1,000,000 rows (~several minutes)
    .venv/bin/python -m bench.import_rss --rows 100000
    .venv/bin/python -m bench.import_rss --bad-last-row  # also: a bad last row writes nothing
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from service.model import load_model

from .common import PYTHON, ROOT, local, peak_rss_mb

SERVICE = str(Path(PYTHON).parent / "service")
SCHEDULE = ROOT / "schedules" / "jilin-2023.yaml"
CONTACTS = ROOT / "contacts"
TEMPLATES = ROOT / "templates"


def write_rows(path: Path, rows: int, bad_last: bool = False) -> None:
    """``rows`` distinct valid submissions: every (unit, obligation, period) owed, in turn,
    each time one second later (distinct moments make every row a new submission)."""
    model = load_model(SCHEDULE, CONTACTS)
    pairs = [
        (u, o.obligation, o.period) for o in model.submittable() for u in model.owers[o.obligation]
    ]
    start = local("2023-05-18T09:00")
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["unit", "obligation", "period", "count", "at"])
        for i in range(rows):
            unit, obligation, period = pairs[i % len(pairs)]
            at = (start + timedelta(seconds=i)).isoformat()
            out.writerow([unit, obligation, period, 1, at])
        if bad_last:
            out.writerow(["atlantis", "weekly-progress", "2023-W25", 1, ""])


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM submissions").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bad-last-row", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        csv_path = tmp / "submissions.csv"
        write_rows(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 2**20
        state = tmp / "state"
        env = {
            "SERVICE_SCHEDULE": str(SCHEDULE),
            "SERVICE_CONTACTS": str(CONTACTS),
            "SERVICE_TEMPLATES": str(TEMPLATES),
            "SERVICE_STATE_DIR": str(state),
            "LANG": "en_US.UTF-8",
        }
        bare = [
            PYTHON,
            "-c",
            "import csv,sys\n"
            "with open(sys.argv[1], encoding='utf-8', newline='') as fh:\n"
            "    for _ in csv.reader(fh): pass",
            str(csv_path),
        ]
        table: list[tuple[str, float, float, str]] = []
        mb, secs, _ = peak_rss_mb(bare, env)
        table.append(("bare csv.reader pass (baseline)", mb, secs, ""))
        mb, secs, _ = peak_rss_mb([SERVICE, "validate"], env)
        table.append(("service validate (baseline: CLI + model)", mb, secs, ""))
        mb, secs, out = peak_rss_mb([SERVICE, "import", str(csv_path)], env)
        table.append(("service import", mb, secs, out.strip()))
        recorded = count_rows(state / "service.db")
        mb, secs, out = peak_rss_mb([SERVICE, "import", str(csv_path)], env)
        table.append(("service import again (all already recorded)", mb, secs, out.strip()))
        if args.bad_last_row:
            bad = tmp / "bad.csv"
            write_rows(bad, args.rows, bad_last=True)
            fresh = {**env, "SERVICE_STATE_DIR": str(tmp / "state-bad")}
            try:
                peak_rss_mb([SERVICE, "import", str(bad)], fresh)
                verdict = "ACCEPTED (wrong)"
            except RuntimeError:
                after = count_rows(tmp / "state-bad" / "service.db")
                verdict = f"refused; {after} rows recorded"
            table.append(("bad last row", 0.0, 0.0, verdict))
        print(
            f"\nservice import, {args.rows:,} rows ({size_mb:.0f} MB CSV); {recorded:,} recorded\n"
        )
        print("| run | peak RSS (MB) | wall (s) | output |")
        print("|---|---:|---:|---|")
        for name, mb, secs, note in table:
            print(f"| {name} | {mb:.0f} | {secs:.1f} | {note} |")
        ok = table[2][1] <= 200 and recorded == args.rows
        print(f"\ntarget peak ≤ 200 MB with every row recorded: {'met' if ok else 'NOT met'}")
        sys.exit(0 if ok else 1)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
