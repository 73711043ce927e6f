"""National-scale benchmarks: ``python -m bench [--quick] [--units N]``.

Every figure is a ratio against a baseline measured in the same run on the same machine;
see bench/README.md for what each one means. Results go to stdout and to
bench/results/latest.md (and latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from service.logs import configure
from service.runtime import Runtime
from service.store.db import create_engine, migrate

from . import dispatch
from .common import (
    ROOT,
    Timer,
    create_database,
    drop_database,
    local,
    peer,
    pg_url,
    settings,
    variant_schedule,
)
from .generate import SCHEDULE, TEMPLATES, write_directory, write_submissions_csv
from .planning import planning, set_planned_through
from .processes import QUIET_MOMENT, daemon_memory, replay

RESULTS = ROOT / "bench" / "results"


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str
    ratio: float | None
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.figure}: {row.measured} | {row.baseline} | {_ratio(row.ratio)}", flush=True)


def _ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def quiet_service_logs(path: Path) -> None:
    """The daemon's own logging set-up (INFO), written to a file instead of the terminal."""
    configure("INFO")
    stream = path.open("a", encoding="utf-8")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream))


async def migrated(database: str) -> None:
    await create_database(database)
    engine = create_engine(pg_url(database))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


# -- figures 1, 2, 4 ------------------------------------------------------------------


async def dispatch_figures(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    n = args.messages
    contacts = tmp / "dispatch-directory"
    write_directory(contacts, n + 1)  # every unit but the national office owes the report
    database = f"bench_{os.getpid()}_dispatch"
    await migrated(database)
    record = tmp / "sink-accepted.txt"
    record.touch()
    try:
        with (
            peer("bench.smtp_sink", str(record)) as sink,
            peer("bench.http_gateway") as gateway,
        ):
            channels = dispatch.write_channels(
                tmp / "channels.yaml", sink.port, gateway.port, args.pool
            )
            email_settings = settings(
                contacts=contacts,
                state_dir=tmp / "state-dispatch",
                database=database,
                schedule=variant_schedule(tmp, ["email"]),
                channels_file=channels,
            )
            sms_settings = email_settings.model_copy(
                update={"schedule": variant_schedule(tmp, ["sms"])}
            )
            runtime = Runtime.load(SCHEDULE, contacts, TEMPLATES)

            # 1. email
            log(f"figure 1: email dispatch, {n} messages, {args.pool} SMTP connections")
            raw = dispatch.prerender_email(dispatch.sample_envelopes(runtime, "email", n))
            email = await dispatch.alternate(
                lambda: dispatch.bare_smtp(sink.port, raw, args.pool),
                lambda: dispatch.service_cycle(email_settings, database, dispatch.BUSY_MOMENT),
                args.rounds,
            )
            bare_email = email.bare_mean
            service = email.runs[email.median]
            ratio = email.ratios[email.median]
            report.raw["email"] = {
                "bare": email.bare,
                "service": [asdict(r) for r in email.runs],
                "ratios": email.ratios,
            }
            report.add(
                Row(
                    "1. email dispatch (plan→claim→render→send→record)",
                    f"{service.rate:.0f} msg/s, {service.item_rate:.0f} items/s "
                    f"({service.sent} sent, {service.items} items, in {service.seconds:.1f} s; "
                    f"median of {len(email.runs)} rounds, ratios "
                    f"{' / '.join(f'{r:.2f}' for r in email.ratios)})",
                    f"bare aiosmtplib {bare_email:.0f} msg/s "
                    f"({' / '.join(f'{b:.0f}' for b in email.bare)}, {args.pool} conns)",
                    ratio,
                    "≥ 0.8",
                    ratio >= 0.8,
                )
            )

            # 1b. the same number of e-mails, each a bundle of three weeks' items
            log(f"figure 1b: email dispatch, {n} bundles of 3-4 items each")
            bundled = await dispatch.bundle_cycle(email_settings, database)
            report.raw["email_bundles"] = asdict(bundled)
            per = bundled.items / bundled.sent if bundled.sent else 0.0
            report.add(
                Row(
                    "1b. email dispatch, bundles (re-check and render every item)",
                    f"{bundled.rate:.0f} msg/s, {bundled.item_rate:.0f} items/s "
                    f"({bundled.sent} sent, {per:.1f} items each, in {bundled.seconds:.1f} s)",
                    f"bare aiosmtplib {bare_email:.0f} msg/s (figure 1's one-item messages)",
                    bundled.rate / bare_email,
                )
            )

            # 2. SMS through the webhook provider
            workers = dispatch.SMS_CONCURRENCY
            log(f"figure 2: SMS webhook dispatch, {n} messages, {workers} at a time")
            url = f"http://127.0.0.1:{gateway.port}/sms"
            requests = dispatch.prerender_sms(dispatch.sample_envelopes(runtime, "sms", n))
            lean = [await dispatch.bare_lean(url, requests, workers)]
            sms = await dispatch.alternate(
                lambda: dispatch.bare_http(url, requests, workers),
                lambda: dispatch.service_cycle(sms_settings, database, dispatch.BUSY_MOMENT),
                args.rounds,
            )
            lean.append(await dispatch.bare_lean(url, requests, workers))
            bare_sms = sms.bare_mean
            bare_lean = sum(lean) / len(lean)
            service = sms.runs[sms.median]
            ratio = sms.ratios[sms.median]
            report.raw["sms"] = {
                "bare": sms.bare,
                "bare_lean": lean,
                "service": [asdict(r) for r in sms.runs],
                "ratios": sms.ratios,
            }
            report.add(
                Row(
                    "2. SMS dispatch via webhook (plan→…→record)",
                    f"{service.rate:.0f} msg/s, {service.item_rate:.0f} items/s "
                    f"({service.sent} sent, {service.items} items, in {service.seconds:.1f} s; "
                    f"median of {len(sms.runs)} rounds, ratios "
                    f"{' / '.join(f'{r:.2f}' for r in sms.ratios)})",
                    f"bare httpx {bare_sms:.0f} req/s "
                    f"({' / '.join(f'{b:.0f}' for b in sms.bare)}, {workers} at a time)",
                    ratio,
                    "≥ 0.8",
                    ratio >= 0.8,
                )
            )
            report.add(
                Row(
                    "2b. the same, against the service's own HTTP transport alone",
                    f"{service.rate:.0f} msg/s",
                    f"bare LeanTransport {bare_lean:.0f} req/s "
                    f"({' / '.join(f'{b:.0f}' for b in lean)}, {workers} at a time)",
                    service.rate / bare_lean,
                )
            )
            del runtime

            # 4. firing lateness
            log(f"figure 4: firing lateness, {n} emails due at one instant (real clock)")
            late = await dispatch.firing_lateness(email_settings, database, record, n, bare_email)
            report.raw["lateness"] = asdict(late)
            report.add(
                Row(
                    f"4. firing lateness p50 ({late.n} due at once)",
                    f"{late.p50:.2f} s (service sent {late.rate:.0f} msg/s)",
                    f"ideal N/2 ÷ bare rate = {late.ideal_p50:.2f} s",
                    late.p50 / late.ideal_p50,
                )
            )
            report.add(
                Row(
                    "4. firing lateness p99",
                    f"{late.p99:.2f} s (worst {late.worst:.2f} s)",
                    f"ideal 0.99·N ÷ bare rate = {late.ideal_p99:.2f} s",
                    late.p99 / late.ideal_p99,
                )
            )
    finally:
        await drop_database(database)


# -- figures 3, 5 ---------------------------------------------------------------------


async def planning_figures(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    units = args.units
    contacts = tmp / "national-directory"
    log(f"figure 3: directory of {units} units, loading the campaign")
    write_directory(contacts, units)
    with Timer() as t_load:
        runtime = Runtime.load(SCHEDULE, contacts, TEMPLATES)
    report.raw["runtime_load_seconds"] = t_load.seconds
    report.notes.append(
        f"Runtime.load of the {units}-unit directory ({len(runtime.model.directory.people)} "
        f"people): {t_load.seconds:.1f} s (start-up and reload cost, not part of a cycle)."
    )
    database = f"bench_{os.getpid()}_plan"
    try:
        await create_database(database)
        log("figure 3: loading the submissions history (COPY), planning")
        fig = await planning(database, runtime)
        report.raw["planning"] = asdict(fig)
        report.notes.append(
            f"Submissions history: {fig.rows} rows, loaded by COPY in {fig.load_seconds:.1f} s."
        )
        report.add(
            Row(
                f"3. planning: full catch-up cycle, {units} units",
                f"{fig.cycle_seconds:.2f} s = count_table {fig.count_table_seconds:.2f} "
                f"+ plan {fig.plan_seconds:.2f} ({fig.planned} messages)",
                f"SQL floor {fig.floor_seconds:.2f} s ({fig.rows} rows)",
                fig.cycle_seconds / fig.floor_seconds,
                "≤ 5×",
                fig.cycle_seconds / fig.floor_seconds <= 5,
            )
        )
        report.add(
            Row(
                "3. planning: steady cycle (06-30 09:00, 07-03 09:30]",
                f"{fig.steady_seconds:.2f} s = count_table {fig.steady_count_seconds:.2f} "
                f"+ plan {fig.steady_plan_seconds:.2f} ({fig.steady_planned} messages)",
                f"SQL floor {fig.floor_seconds:.2f} s",
                fig.steady_seconds / fig.floor_seconds,
                "≤ 5×",
                fig.steady_seconds / fig.floor_seconds <= 5,
            )
        )
        report.add(
            Row(
                "3. naive: one APScheduler job per reminder (time)",
                f"{fig.naive_seconds:.1f} s to add {fig.naive_jobs} DateTrigger jobs",
                f"service catch-up cycle {fig.cycle_seconds:.2f} s",
                fig.naive_seconds / fig.cycle_seconds,
            )
        )
        del runtime
        gc.collect()

        log("figure 5: daemon peak memory (service run, one quiet cycle)")
        await set_planned_through(database, "jilin-2023", local(QUIET_MOMENT) - timedelta(hours=1))
        mem = daemon_memory(contacts, tmp / "state-memory", database)
        report.raw["memory"] = asdict(mem)
        report.add(
            Row(
                f"5. daemon peak RSS, {units} units + ledger",
                f"{mem.daemon_mb:.0f} MB (VmHWM; run took {mem.daemon_seconds:.1f} s)",
                f"bare import of the service {mem.bare_mb:.0f} MB",
                mem.daemon_mb / mem.bare_mb,
                "≤ 300 MB",
                mem.daemon_mb <= 300,
            )
        )
        report.add(
            Row(
                "3. naive: one APScheduler job per reminder (memory)",
                f"{fig.naive_mb:.0f} MB for {fig.naive_jobs} jobs",
                f"whole daemon peak {mem.daemon_mb:.0f} MB",
                fig.naive_mb / mem.daemon_mb,
            )
        )
    finally:
        await drop_database(database)


# -- figure 6 -------------------------------------------------------------------------


def replay_figure(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    units = args.replay_units
    log(f"figure 6: service simulate of the whole campaign, {units} units")
    contacts = tmp / "replay-directory"
    write_directory(contacts, units)
    from service.model import load_model

    subs = write_submissions_csv(load_model(SCHEDULE, contacts), contacts / "submissions.csv")
    result = replay(contacts, contacts / "submissions.csv", tmp / "replay", units)
    report.raw["replay"] = asdict(result) | {"submissions": subs}
    campaign_seconds = (local("2024-01-01T00:00") - local("2023-05-18T00:00")).total_seconds()
    report.add(
        Row(
            f"6. replay 2023 campaign, {units} units ({subs} submissions)",
            f"{result.seconds:.1f} s, {result.messages} messages sent "
            f"({result.messages / result.seconds:.0f} msg/s, {result.cycles} cycles)",
            f"service validate {result.validate_seconds:.1f} s",
            result.seconds / result.validate_seconds,
        )
    )
    report.notes.append(
        f"Replay speed-up over real time: {campaign_seconds / result.seconds:,.0f}×; "
        f"final states {result.states}."
    )


# -- output ---------------------------------------------------------------------------


def table(report: Report) -> str:
    head = ["figure", "measured", "baseline (same run)", "ratio", "target", ""]
    body = [
        [r.figure, r.measured, r.baseline, _ratio(r.ratio), r.target, _verdict(r.ok)]
        for r in report.rows
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "service"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"commit {commit}{' + local changes in service/' if dirty else ''} · "
        f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small smoke sizes (under 2 minutes)")
    p.add_argument("--units", type=int, help="directory size for planning/memory [100000]")
    p.add_argument("--messages", type=int, help="messages per dispatch figure [10000]")
    p.add_argument("--replay-units", type=int, help="directory size for the replay [10000]")
    p.add_argument(
        "--rounds",
        type=int,
        help="service runs of figures 1 and 2, each between two bare runs [3; --quick 1]",
    )
    p.add_argument("--pool", type=int, default=dispatch.POOL_SIZE, help="SMTP connections [2]")
    p.add_argument(
        "--only",
        default="dispatch,planning,replay",
        help="comma-separated sections: dispatch (1,2,4), planning (3,5), replay (6)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = p.parse_args(argv)
    quick = args.quick
    args.units = args.units or (2_000 if quick else 100_000)
    args.messages = args.messages or (1_000 if quick else 10_000)
    args.rounds = args.rounds or (1 if quick else 3)
    args.replay_units = args.replay_units or (40 if quick else 10_000)
    return args


async def run(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    sections = set(args.only.split(","))
    if "dispatch" in sections:
        await dispatch_figures(args, tmp, report)
    if "planning" in sections:
        await planning_figures(args, tmp, report)
    if "replay" in sections:
        replay_figure(args, tmp, report)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench", *([shlex.join(given)] if given else [])])
    started = time.perf_counter()
    before = machine()
    log(f"{command} — {before}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    quiet_service_logs(tmp / "service.log")
    report = Report()
    try:
        asyncio.run(run(args, tmp, report))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    seconds = time.perf_counter() - started
    text = (
        f"# Benchmark results\n\n"
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min\n\n"
        f"Machine: {before}\n\n"
        + table(report)
        + "\n\n"
        + "".join(f"- {n}\n" for n in report.notes)
        + f"\nLoad average at the end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}. "
        "Other work on the machine slows both sides of every ratio; see bench/README.md.\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    args.output.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                "seconds": seconds,
                "rows": [asdict(r) for r in report.rows],
                "raw": report.raw,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    print()
    print(text)
    log(f"written {args.output}")


if __name__ == "__main__":
    main()
