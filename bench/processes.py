"""Figures 5 and 6: the CLI in subprocesses — daemon peak memory, and a campaign replay."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .common import PYTHON, peak_rss_mb, pg_url
from .generate import SCHEDULE, TEMPLATES

SERVICE = str(Path(PYTHON).parent / "service")
QUIET_MOMENT = "2023-07-04T03:00"  # nothing due: one cycle reads the ledger, plans nothing
QUIET_END = "2023-07-04T03:01"


def _env(contacts: Path, state_dir: Path, database: str | None = None) -> dict[str, str]:
    env = {
        "SERVICE_SCHEDULE": str(SCHEDULE),
        "SERVICE_CONTACTS": str(contacts),
        "SERVICE_TEMPLATES": str(TEMPLATES),
        "SERVICE_STATE_DIR": str(state_dir),
    }
    if database:
        env["SERVICE_DATABASE_URL"] = pg_url(database)
    return env


@dataclass
class Memory:
    daemon_mb: float
    daemon_seconds: float
    bare_mb: float


def daemon_memory(contacts: Path, state_dir: Path, database: str) -> Memory:
    """Peak RSS (wait4) of ``service run`` doing one cycle at a quiet moment.

    The cycle loads the directory, schedule and templates, migrates, reads the whole
    submissions ledger into the count table and plans nothing (the window was set just
    before the moment by the caller). The baseline is a bare interpreter importing the
    service package's daemon modules.
    """
    bare, _, _ = peak_rss_mb(
        [PYTHON, "-c", "import service.cli, service.app, service.daemon, service.cycle"]
    )
    env = _env(contacts, state_dir, database)
    # `run` wants --until after --virtual-from: one minute later, still nothing due (the
    # start cycle and the one at --until); English output for a stable check.
    argv = [SERVICE, "--lang", "en", "run", "--virtual-from", QUIET_MOMENT, "--until", QUIET_END]
    daemon, seconds, out = peak_rss_mb([*argv, "--log-level", "WARNING"], env)
    if not re.search(r"\b[12] cycles", out):
        raise RuntimeError(f"expected one or two quiet cycles, got: {out!r}")
    return Memory(daemon, seconds, bare)


@dataclass
class Replay:
    units: int
    seconds: float
    messages: int
    cycles: int
    states: str
    validate_seconds: float


def replay(contacts: Path, submissions_csv: Path, out: Path, units: int) -> Replay:
    """``service simulate`` of the whole campaign, and ``service validate`` as its baseline."""
    env = _env(contacts, out / "state")
    _, validate_seconds, _ = peak_rss_mb([SERVICE, "validate"], env)
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        SERVICE,
        "--lang",
        "en",
        "simulate",
        "--from",
        "2023-05-18T00:00",
        "--to",
        "2024-01-01T00:00",
        "--out",
        str(out),
        "--submissions",
        str(submissions_csv),
    ]
    _, seconds, text = peak_rss_mb(argv, env)
    found = re.search(r"(\d+) cycles, (\d+) messages sent; states: ([^\n]*)", text)
    if not found:
        raise RuntimeError(f"unexpected simulate output: {text!r}")
    return Replay(
        units=units,
        seconds=seconds,
        messages=int(found[2]),
        cycles=int(found[1]),
        states=found[3],
        validate_seconds=validate_seconds,
    )
