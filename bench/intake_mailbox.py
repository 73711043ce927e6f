"""Issue 11's figure: one mailbox pass over N new e-mails with an xlsx each, against a bare
imaplib client fetching the same messages (same Dovecot, same run).

``python -m bench.intake_mailbox [N] [--quick] [--one-by-one] [--postgres]`` (default
1,000 mails; ``--quick`` 200; needs /usr/sbin/dovecot). Prints a table: the bare fetch,
our batched poll and (``--one-by-one``) the per-mail path the poll used before batching,
each with a per-mail breakdown measured inside the real pass (IMAP, MIME, xlsx, decision,
file copy, database). Not yet a section of ``python -m bench``: the lead wires it in
(``measure(n)`` returns the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import imaplib
import inspect
import logging
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from service.clock import VirtualClock
from service.intake import core, mailbox
from service.intake.core import Intake, Outcome
from service.intake.mailbox import MailboxConfig, poll
from service.intake.store import IntakeStore
from service.model import load_model
from service.store.db import create_engine, migrate
from tests.conftest import local
from tests.intake import dovecot as dc
from tests.intake.conftest import make_mail, progress_form

from .common import ROOT, Timer, create_database, drop_database, pg_url

# Where a pass spends its time: (label, owner, attribute). Wrapped for the measured pass
# only. What is left of the pass once these are taken out is the event loop, the logging
# and (one-by-one) the per-mail database round trips.
_STAGES = [
    ("IMAP fetch", mailbox._Session, "fetch"),
    ("IMAP flag (STORE)", mailbox._Session, "done"),
    ("MIME parse", core, "parse_mail"),
    ("xlsx read", core, "read_grids"),
    ("decide (form, unit, period)", Intake, "decide"),
    ("file copy (0600)", Intake, "_keep"),
    ("database look-up (batched)", IntakeStore, "known"),
    ("database group commit (batched)", Intake, "_record_batch"),
]
_BARE_BATCH = 50


def _bare_fetch(server: dc.Dovecot, user: str) -> float:
    """What a bare client pays: SEARCH, then UID FETCH BODY.PEEK[] in batches of 50."""
    conn = imaplib.IMAP4(server.host, server.port)
    conn.login(user, dc.PASSWORD)
    conn.select("INBOX", readonly=True)
    with Timer() as t:
        _typ, data = conn.uid("SEARCH", "ALL")
        uids = data[0].split()
        for start in range(0, len(uids), _BARE_BATCH):
            chunk = b",".join(uids[start : start + _BARE_BATCH]).decode()
            conn.uid("FETCH", chunk, "(BODY.PEEK[])")
    conn.logout()
    return t.seconds


def _unflag(server: dc.Dovecot, user: str) -> None:
    """Make every message new again for the next measured pass."""
    conn = imaplib.IMAP4(server.host, server.port)
    conn.login(user, dc.PASSWORD)
    conn.select("INBOX")
    conn.uid("STORE", "1:*", "-FLAGS", f"({mailbox.DONE} {mailbox.FAILED})")
    conn.logout()


@contextmanager
def _stage_timers() -> Iterator[dict[str, float]]:
    spent: dict[str, float] = defaultdict(float)
    saved = []
    for label, owner, name in _STAGES:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, _timed(original, label, spent))
    try:
        yield spent
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _timed(fn: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start

    return wrapper


async def _one_by_one(
    self: Intake, raws: list[bytes], source: core.IntakeSource = "inbound-mail"
) -> list[list[Outcome] | Exception]:
    """The pass as it was before batching: take_message for each mail in turn."""
    out: list[list[Outcome] | Exception] = []
    for raw in raws:
        try:
            out.append(await self.take_message(raw, core.Hints(), source))
        except Exception as exc:
            out.append(exc)
    return out


async def _poll(
    env: dict[str, str], tmp: Path, url: str, batched: bool
) -> tuple[float, Counter[str], dict[str, float]]:
    model = load_model(ROOT / "schedules" / "jilin-2023.yaml", ROOT / "contacts")
    engine = create_engine(url)
    original = Intake.take_messages
    try:
        await migrate(engine)
        intake = Intake(model, engine, VirtualClock(local("2023-06-02T10:00")), tmp, "bench")
        if not batched:
            Intake.take_messages = _one_by_one  # type: ignore[assignment,method-assign]
        cpu = time.process_time()
        with _stage_timers() as spent, Timer() as t:
            result = await poll(intake, MailboxConfig.from_env(env))
        spent_cpu = time.process_time() - cpu  # all threads: loop, IMAP, aiosqlite
        return t.seconds, Counter(o.status for o in result.outcomes), {**spent, "cpu": spent_cpu}
    finally:
        Intake.take_messages = original  # type: ignore[method-assign]
        await engine.dispose()


def _database(postgres: bool, tmp: Path) -> tuple[str, Callable[[], None]]:
    if not postgres:
        return f"sqlite+aiosqlite:///{tmp / f'{uuid.uuid4().hex}.db'}", lambda: None
    name = f"bench_intake_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_database(name))
    return pg_url(name), lambda: asyncio.run(drop_database(name))


def measure(n: int, one_by_one: bool = False, postgres: bool = False) -> dict[str, Any]:
    """Figures of one run: bare fetch, batched poll and (optionally) the per-mail poll."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    model = load_model(ROOT / "schedules" / "jilin-2023.yaml", ROOT / "contacts")
    names = [u.name for u in model.directory.units.values() if model.owes(u.id, "weekly-progress")]
    server, proc = dc.start()
    figures: dict[str, Any] = {"n": n, "backend": "PostgreSQL" if postgres else "SQLite"}
    try:
        user = "bench"
        conn = imaplib.IMAP4(server.host, server.port)
        conn.login(user, dc.PASSWORD)
        for i in range(n):  # one real workbook per mail: every attachment has its own hash
            form = progress_form(names[i % len(names)], [i, i + 1, 3])
            raw = make_mail("x@example.net", [(f"周报{i}.xlsx", form)], message_id=f"<b{i}@x>")
            conn.append("INBOX", None, None, raw)
        conn.logout()
        # Warm-up outside the measured passes: imports and first-call caches.
        core.read_grids("w.xlsx", progress_form(names[0], [1, 2, 3]))
        figures["bare_s"] = _bare_fetch(server, user)
        env = {
            "SERVICE_IMAP_HOST": server.host,
            "SERVICE_IMAP_PORT": str(server.port),
            "SERVICE_IMAP_USER": user,
            "SERVICE_IMAP_PASSWORD": dc.PASSWORD,
            "SERVICE_IMAP_TLS": "0",
        }
        for mode in [*(["one-by-one"] if one_by_one else []), "batched"]:
            with tempfile.TemporaryDirectory() as tmp:
                url, drop = _database(postgres, Path(tmp))
                try:
                    seconds, statuses, spent = asyncio.run(
                        _poll(env, Path(tmp), url, mode == "batched")
                    )
                finally:
                    drop()
            assert statuses["recorded"] == n, statuses
            cpu_s = spent.pop("cpu")
            figures[mode] = {"poll_s": seconds, "cpu_s": cpu_s, "stages": spent}
            _unflag(server, user)
    finally:
        dc.stop(server, proc)
    figures["poll_s"] = figures["batched"]["poll_s"]
    figures["ratio"] = figures["poll_s"] / figures["bare_s"]
    return figures


def table(figures: dict[str, Any]) -> str:
    n, bare = figures["n"], figures["bare_s"]
    modes = [m for m in ("batched", "one-by-one") if m in figures]
    lines = [
        f"intake_mailbox: {n} new mails with an xlsx each, Dovecot on loopback, "
        f"{figures['backend']}",
        f"{'':32}{'total s':>10}{'ms/mail':>10}{'x bare':>10}{'CPU s':>10}",
        f"{'bare IMAP fetch':32}{bare:>10.2f}{bare / n * 1e3:>10.2f}{1:>10.0f}",
    ]
    for m in modes:
        s, cpu = figures[m]["poll_s"], figures[m]["cpu_s"]
        lines.append(
            f"{'poll, ' + m:32}{s:>10.2f}{s / n * 1e3:>10.2f}{s / bare:>10.0f}{cpu:>10.2f}"
        )
    lines += ["", f"{'per mail (ms)':32}" + "".join(f"{m:>12}" for m in modes)]
    for label, _owner, _name in _STAGES:
        cells = "".join(f"{figures[m]['stages'].get(label, 0.0) / n * 1e3:>12.2f}" for m in modes)
        lines.append(f"{label:32}{cells}")
    rest = [figures[m]["poll_s"] - sum(figures[m]["stages"].values()) for m in modes]
    lines.append(
        f"{'the rest (loop, logs, per-mail DB)':32}"
        + "".join(f"{r / n * 1e3:>12.2f}" for r in rest)
    )
    lines.append(f"target: poll <= 2x bare; measured {figures['ratio']:.0f}x (batched)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="200 mails")
    parser.add_argument("--one-by-one", action="store_true", help="also the per-mail pass")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at 127.0.0.1")
    args = parser.parse_args()
    count = args.n or (200 if args.quick else 1000)
    print(table(measure(count, args.one_by_one, args.postgres)))
