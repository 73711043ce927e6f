"""``service requeue``: put failed messages back in the queue once the cause is fixed.

Select by key (repeatable), by state (``failed`` only: nothing else may be re-sent) and by
the planned moment (``--from`` / ``--to``); ``--dry-run`` lists what would be re-queued.
Re-queued messages are due at once and still expire as planned.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..store.db import create_engine, migrate
from .commands import app
from .common import Context, fail, run_async

REQUEUEABLE = ("failed",)


@app.command()
def requeue(
    ctx: typer.Context,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="A message key (repeatable).")
    ] = None,
    status_: Annotated[str, typer.Option("--status", help="Only messages in this state.")] = (
        "failed"
    ),
    from_: Annotated[
        str | None, typer.Option("--from", help="Planned at or after (ISO 8601).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Planned before (ISO 8601).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, change nothing.")] = False,
) -> None:
    """Re-queue failed messages (by key, state, planned time range)."""
    if status_ not in REQUEUEABLE:
        fail(f"--status: only {', '.join(REQUEUEABLE)} messages can be re-queued, not {status_!r}")

    async def go(state: Context) -> None:
        from ..store.outbox import Outbox

        model = state.model()
        lo = state.at(from_, model) if from_ else None
        hi = state.at(to, model) if to else None
        wanted = set(key or ())
        engine = create_engine(state.settings.db_url)
        try:
            await migrate(engine)
            outbox = Outbox(engine, model.key)
            keys = [
                r["idem_key"]
                async for r in outbox.iter_rows(status_)
                if (not wanted or r["idem_key"] in wanted)
                and (lo is None or r["due_at"] >= lo)
                and (hi is None or r["due_at"] < hi)
            ]
            if wanted - set(keys):
                missing = sorted(wanted - set(keys))
                typer.echo(f"未找到或不是{status_}状态（not found or not {status_}）：{missing}")
            done = len(keys) if dry_run else await outbox.requeue(keys)
        finally:
            await engine.dispose()
        for k in keys:
            typer.echo(k)
        verb = "将重新排队（dry run）" if dry_run else "已重新排队"
        typer.echo(f"{verb}：{done} 条消息")

    run_async(ctx, go)
