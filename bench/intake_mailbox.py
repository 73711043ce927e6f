"""Issue 11's figure: one mailbox pass over N new e-mails with an xlsx each, against a bare
imaplib client fetching the same messages (same Dovecot, same run).

``python -m bench.intake_mailbox [N]`` (default 1,000; needs /usr/sbin/dovecot). Not yet a
section of ``python -m bench``: the lead wires it in (``measure(n)`` returns the figures).
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

import structlog

from service.clock import VirtualClock
from service.intake.core import Intake
from service.intake.mailbox import MailboxConfig, poll
from service.model import load_model
from service.store.db import create_engine, migrate
from tests.conftest import local
from tests.intake import dovecot as dc
from tests.intake.conftest import make_mail, progress_form

from .common import ROOT, Timer


def _bare_fetch(server: dc.Dovecot, user: str) -> float:
    conn = imaplib.IMAP4(server.host, server.port)
    conn.login(user, dc.PASSWORD)
    conn.select("INBOX", readonly=True)
    with Timer() as t:
        _typ, data = conn.uid("SEARCH", "ALL")
        uids = data[0].split()
        for start in range(0, len(uids), 50):
            conn.uid("FETCH", b",".join(uids[start : start + 50]).decode(), "(BODY.PEEK[])")
    conn.logout()
    return t.seconds


async def _poll(env: dict[str, str], tmp: Path) -> tuple[float, Counter[str]]:
    model = load_model(ROOT / "schedules" / "jilin-2023.yaml", ROOT / "contacts")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'service.db'}")
    try:
        await migrate(engine)
        intake = Intake(model, engine, VirtualClock(local("2023-06-02T10:00")), tmp, "bench")
        with Timer() as t:
            result = await poll(intake, MailboxConfig.from_env(env))
        return t.seconds, Counter(o.status for o in result.outcomes)
    finally:
        await engine.dispose()


def measure(n: int) -> dict[str, float]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    model = load_model(ROOT / "schedules" / "jilin-2023.yaml", ROOT / "contacts")
    names = [u.name for u in model.directory.units.values() if model.owes(u.id, "weekly-progress")]
    server, proc = dc.start()
    try:
        user = "bench"
        conn = imaplib.IMAP4(server.host, server.port)
        conn.login(user, dc.PASSWORD)
        for i in range(n):
            form = progress_form(names[i % len(names)], [i, i + 1, 3])
            raw = make_mail("x@example.net", [(f"周报{i}.xlsx", form)], message_id=f"<b{i}@x>")
            conn.append("INBOX", None, None, raw)
        conn.logout()
        bare = _bare_fetch(server, user)
        env = {
            "SERVICE_IMAP_HOST": server.host,
            "SERVICE_IMAP_PORT": str(server.port),
            "SERVICE_IMAP_USER": user,
            "SERVICE_IMAP_PASSWORD": dc.PASSWORD,
            "SERVICE_IMAP_TLS": "0",
        }
        with tempfile.TemporaryDirectory() as tmp:
            seconds, statuses = asyncio.run(_poll(env, Path(tmp)))
    finally:
        dc.stop(server, proc)
    assert statuses["recorded"] == n, statuses
    return {"n": n, "bare_s": bare, "poll_s": seconds, "ratio": seconds / bare}


if __name__ == "__main__":
    figures = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(
        f"{figures['n']:.0f} mails: bare fetch {figures['bare_s']:.2f} s, one poll "
        f"{figures['poll_s']:.2f} s ({figures['poll_s'] / figures['n'] * 1000:.1f} ms/mail): "
        f"{figures['ratio']:.0f}x (target <= 2x)"
    )
