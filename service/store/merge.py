"""Merging the items of a bundle two planners planned differently (see ``Outbox.insert``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..planner import URGENCY, PlannedMessage
from .tables import messages

log = structlog.get_logger("service.outbox")


def _item_id(item: dict[str, Any]) -> tuple[str, str, str, str]:
    return item["obligation"], item["period"], item["unit"], item["step"]


async def merge_items(
    conn: Any, campaign: str, pg: bool, planned: Sequence[PlannedMessage], now: datetime
) -> int:
    """Add items another planner did not see to the bundles already stored.

    Two planners can plan one bundle with different items (a submission or retraction
    landed between their runs; a catch-up and a timely plan meeting at one window
    opening): the union is kept while the bundle is pending; items re-check at send
    time anyway. Items for a bundle already claimed or sent become a follow-up message
    (key ``…/more``) rather than being lost. Returns how many follow-ups were new.
    """
    if not planned:
        return 0
    m = messages.c
    query = sa.select(m.id, m.idem_key, m.status, m["items"], m.expires_at).where(
        m.idem_key.in_([p.key for p in planned])
    )
    if pg:
        query = query.with_for_update()
    stored = {r.idem_key: r._mapping for r in (await conn.execute(query)).all()}
    follow_ups: list[PlannedMessage] = []
    for p in planned:
        row = stored.get(p.key)
        if row is None or row["items"] is None:
            continue
        have = {_item_id(it) for it in row["items"]}
        extra = [it for it in p.items if _item_id(it) not in have]
        if not extra:
            continue
        if row["status"] != "pending":
            log.warning(
                "items planned for a bundle already handled; sending them separately",
                key=p.key,
                status=row["status"],
                items=len(extra),
            )
            if not p.key.endswith("/more"):
                follow_ups.append(replace(p, key=p.key + "/more", items=extra))
            continue
        items = sorted(
            [*row["items"], *extra],
            key=lambda it: (URGENCY[it["kind"]], it["obligation"], it["period"], it["unit"]),
        )
        obligations = {it["obligation"] for it in items}
        expires = max(e for e in (row["expires_at"], p.expires_at) if e is not None)
        await conn.execute(
            sa.update(messages)
            .where(m.id == row["id"], m.status == "pending")
            .values(
                items=items,
                kind=items[0]["kind"],
                step=items[0]["step"],
                obligation=items[0]["obligation"] if len(obligations) == 1 else None,
                periods=sorted({f"{it['obligation']}@{it['period']}" for it in items}),
                units=sorted({it["unit"] for it in items}),
                expires_at=expires,
                updated_at=now,
            )
        )
    if not follow_ups:
        return 0
    insert = pg_insert if pg else sqlite_insert
    stmt = insert(messages).on_conflict_do_nothing(index_elements=[m.idem_key])
    result = await conn.execute(
        stmt.returning(m.id),
        [
            {
                "idem_key": f.key, "campaign": campaign, "kind": f.items[0]["kind"],
                "step": f.items[0]["step"], "obligation": f.obligation,
                "periods": list(f.periods), "units": list(f.units),
                "recipient_id": f.recipient_id, "channel": f.channel, "address": f.address,
                "due_at": f.due_at, "next_attempt_at": now, "expires_at": f.expires_at,
                "status": f.status, "reason": f.reason, "created_at": now,
                "updated_at": now, "items": f.items,
            }
            for f in follow_ups
        ],
    )  # fmt: skip
    return len(result.all())
