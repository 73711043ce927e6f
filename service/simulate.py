"""Replay a campaign on a virtual clock through the daemon's own cycle, into a file outbox."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .app import open_app
from .clock import VirtualClock
from .config import Settings
from .daemon import run_virtual
from .errors import ConfigError, Problem
from .model import CampaignModel
from .private import DIR_MODE, private_dir, private_file, private_opener
from .statelock import exclusive_state
from .store.outbox import Outbox
from .submissions import load_submissions_csv

MARKER = ".service-simulation"  # written into every simulate output folder


def _check_out(out: Path) -> None:
    """Only a folder that is empty or that a previous simulate wrote (it holds ``MARKER``)
    may be reused: the replay deletes the previous outbox and database in it."""
    if out.exists() and not out.is_dir():
        raise ConfigError([Problem(str(out), None, "--out", "不是目录")])
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(
            [
                Problem(
                    str(out),
                    None,
                    "--out",
                    "目录不是空的，也不是之前 simulate 的输出（没有 "
                    f"{MARKER} 标记文件）；为免删除其中的文件，请指定一个空目录或新目录",
                )
            ]
        )


def _prepare(out: Path) -> Path:
    """A replay starts from nothing: the folder is the simulation's own output."""
    private_dir(out).chmod(DIR_MODE)  # empty or ours (checked): the replay's own folder
    open(out / MARKER, "a", opener=private_opener).close()
    db = out / "simulation.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(out / "outbox", ignore_errors=True)
    for name in ("messages.jsonl", "outbox-states.jsonl"):  # created 0600: opened "w" later
        private_file(out / name)
    return db


@dataclass
class SimulationResult:
    cycles: int
    states: dict[str, int]  # messages by final state
    sent: int  # lines of messages.jsonl


async def simulate(
    settings: Settings,
    start: datetime,
    end: datetime,
    out: Path,
    submissions: Path | None = None,
    max_cycles: int = 1_000_000,
) -> SimulationResult:
    """Step the clock from one due moment to the next and run a cycle at each."""
    await asyncio.to_thread(_check_out, out)
    db_url = f"sqlite+aiosqlite:///{out / 'simulation.db'}"
    with exclusive_state(db_url):  # never wipe a replay that is still running
        return await _simulate(settings, start, end, out, submissions, max_cycles)


async def _simulate(
    settings: Settings,
    start: datetime,
    end: datetime,
    out: Path,
    submissions: Path | None,
    max_cycles: int,
) -> SimulationResult:
    db = await asyncio.to_thread(_prepare, out)
    db_url = f"sqlite+aiosqlite:///{db}"
    settings = settings.model_copy(update={"state_dir": out, "database_url": db_url})
    clock = VirtualClock(start)
    async with open_app(settings, clock, worker="simulator", durable_outbox=False) as app:
        if submissions is not None:
            await app.ledger.record(
                load_submissions_csv(submissions, app.runtime.model), "simulate"
            )
        cycles = await run_virtual(app, clock, end, max_cycles=max_cycles)
        counts = await app.outbox.status_counts()
        sent = await _export(app.outbox, app.runtime.model, out)
    return SimulationResult(cycles, counts, sent)


async def _export(outbox: Outbox, model: CampaignModel, out: Path) -> int:
    """messages.jsonl (sent, by time then key) and outbox-states.jsonl, streamed.

    A 10,000-unit campaign sends ~540,000 messages: they are written as they are read,
    never held together.
    """
    tz = model.schedule.campaign.tz
    names = {p.id: p.name for p in model.directory.people}
    sent = 0
    with (out / "messages.jsonl").open("w", encoding="utf-8") as fh:
        async for r in outbox.iter_rows(status="sent", by_key=True):
            message = {
                "key": r["idem_key"],
                "at": r["sent_at"].astimezone(tz).isoformat(),
                "kind": r["kind"],
                "channel": r["channel"],
                "to": r["address"],
                "recipient": r["recipient_id"],
                "recipient_name": names.get(r["recipient_id"], ""),
                "obligation": r["obligation"],
                "period": "+".join(k.partition("@")[2] for k in r["periods"])
                if r["obligation"]
                else None,
                "periods": list(r["periods"]),
                "units": list(r["units"]),
                "items": [
                    {
                        "obligation": it["obligation"],
                        "period": it["period"],
                        "unit": u,
                        "step": it["step"],
                    }
                    for it in r["items"] or ()
                    for u in it.get("units") or [it["unit"]]
                ],  # fmt: skip
                "subject": r["subject"],
                "body": r["body"],
            }
            fh.write(json.dumps(message, ensure_ascii=False) + "\n")
            sent += 1
    with (out / "outbox-states.jsonl").open("w", encoding="utf-8") as fh:
        async for r in outbox.iter_rows():
            state = {
                "key": r["idem_key"],
                "status": r["status"],
                "kind": r["kind"],
                "channel": r["channel"],
                "recipient": r["recipient_id"],
                "due": r["due_at"].astimezone(tz).isoformat(),
                "reason": r["reason"],
                "attempts": r["attempts"],
            }
            fh.write(json.dumps(state, ensure_ascii=False) + "\n")
    return sent
