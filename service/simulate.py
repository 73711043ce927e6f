"""Replay a campaign on a virtual clock through the daemon's own cycle, into a file outbox."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .app import open_app
from .clock import VirtualClock
from .config import Settings
from .daemon import run_virtual
from .submissions import load_submissions_csv


def _prepare(out: Path) -> Path:
    """A replay starts from nothing: the folder is the simulation's own output."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "simulation.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(out / "outbox", ignore_errors=True)
    return db


@dataclass
class SimulationResult:
    cycles: int
    states: dict[str, int]  # messages by final state
    messages: list[dict[str, Any]]


async def simulate(
    settings: Settings,
    start: datetime,
    end: datetime,
    out: Path,
    submissions: Path | None = None,
    max_cycles: int = 1_000_000,
) -> SimulationResult:
    """Step the clock from one due moment to the next and run a cycle at each."""
    db = await asyncio.to_thread(_prepare, out)
    settings = settings.model_copy(
        update={"state_dir": out, "database_url": f"sqlite+aiosqlite:///{db}"}
    )
    clock = VirtualClock(start)
    async with open_app(settings, clock, worker="simulator", durable_outbox=False) as app:
        if submissions is not None:
            await app.ledger.record(
                load_submissions_csv(submissions, app.runtime.model), "simulate"
            )
        cycles = await run_virtual(app, clock, end, max_cycles=max_cycles)
        counts = await app.outbox.status_counts()
        rows = await app.outbox.rows(status="sent")
        model = app.runtime.model
        tz = model.schedule.campaign.tz
        people = {p.id: p for p in model.directory.people}
        messages = [
            {
                "key": r["idem_key"],
                "at": r["sent_at"].astimezone(tz).isoformat(),
                "kind": r["kind"],
                "channel": r["channel"],
                "to": r["address"],
                "recipient": r["recipient_id"],
                "recipient_name": people[r["recipient_id"]].name
                if r["recipient_id"] in people
                else "",
                "obligation": r["obligation"],
                "period": "+".join(k.partition("@")[2] for k in r["periods"])
                if r["obligation"]
                else None,
                "periods": list(r["periods"]),
                "units": list(r["units"]),
                "subject": r["subject"],
                "body": r["body"],
            }
            for r in rows
        ]
        messages.sort(key=lambda m: (m["at"], m["key"]))
        with (out / "messages.jsonl").open("w", encoding="utf-8") as fh:
            for m in messages:
                fh.write(json.dumps(m, ensure_ascii=False) + "\n")
        all_rows = await app.outbox.rows()
        with (out / "outbox-states.jsonl").open("w", encoding="utf-8") as fh:
            for r in all_rows:
                fh.write(
                    json.dumps(
                        {
                            "key": r["idem_key"],
                            "status": r["status"],
                            "reason": r["reason"],
                            "attempts": r["attempts"],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    return SimulationResult(cycles, counts, messages)
