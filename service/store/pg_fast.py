"""PostgreSQL's fast path for the dispatcher's hot writes: one statement per batch.

A group commit used to be a ``SELECT … FOR UPDATE``, one ``UPDATE`` per transition
(executemany) and an ``INSERT`` of the attempts; an SMS cap reservation was one upsert per
message. On a two-core machine the database shares the CPU with the sender and its peer,
so every statement the server parses and plans is taken from the send rate. Here each
batch is one statement over ``unnest``-ed arrays: the rows are locked in id (or
(day, phone)) order as before, the same conditions decide what applies, and SQLite keeps
the portable statements in :mod:`service.store.outbox`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .recording import Transition

# What a transition may set; anything else (or another SQL expression) takes the
# portable path. ``attempts`` is one of the two shared expressions (``+ 1`` or the same).
_KNOWN = frozenset(
    {
        "status",
        "reason",
        "updated_at",
        "lease_until",
        "attempts",
        "next_attempt_at",
        "claimed_by",
        "sent_at",
        "provider_id",
        "subject",
        "body",
    }
)

_TRANSITIONS = """
WITH t AS (
    SELECT * FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[],
        $7::boolean[], $8::timestamptz[], $9::boolean[], $10::timestamptz[], $11::text[],
        $12::text[], $13::text[], $14::timestamptz[], $15::text[], $16::text[],
        $17::text[], $18::int[]
    ) AS t(id, worker, status, reason, updated_at, attempts_inc,
           requeue, next_attempt_at, sent, sent_at, provider_id,
           subject, body, a_at, a_outcome, a_error,
           a_provider_id, a_duration)
),
held AS (
    SELECT m.id FROM messages AS m JOIN t ON m.id = t.id AND m.claimed_by = t.worker
    WHERE m.status = 'sending' ORDER BY m.id FOR UPDATE OF m
),
upd AS (
    UPDATE messages AS m SET
        status = t.status,
        reason = t.reason,
        updated_at = t.updated_at,
        lease_until = NULL,
        attempts = m.attempts + t.attempts_inc,
        next_attempt_at = CASE WHEN t.requeue THEN t.next_attempt_at ELSE m.next_attempt_at END,
        claimed_by = CASE WHEN t.requeue THEN NULL ELSE m.claimed_by END,
        sent_at = CASE WHEN t.sent THEN t.sent_at ELSE m.sent_at END,
        provider_id = CASE WHEN t.sent THEN t.provider_id ELSE m.provider_id END,
        subject = CASE WHEN t.sent THEN t.subject ELSE m.subject END,
        body = CASE WHEN t.sent THEN t.body ELSE m.body END
    FROM t JOIN held ON held.id = t.id
    WHERE m.id = t.id AND m.claimed_by = t.worker AND m.status = 'sending'
    RETURNING m.id, t.worker
),
ins AS (
    INSERT INTO delivery_attempts (message_id, at, worker, outcome, error, provider_id,
                                   duration_ms)
    SELECT t.id, t.a_at, t.worker, t.a_outcome, t.a_error, t.a_provider_id, t.a_duration
    FROM t JOIN upd ON upd.id = t.id AND upd.worker = t.worker
)
SELECT id, worker FROM upd
"""

_RESERVE = """
WITH w AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::int[]) AS w(phone, day, lim)
)
INSERT INTO sms_quota AS q (campaign, phone, day, used)
SELECT $1, w.phone, w.day, 1 FROM w ORDER BY w.day, w.phone
ON CONFLICT (campaign, phone, day) DO UPDATE SET used = q.used + 1
WHERE q.used < (SELECT w.lim FROM w WHERE w.phone = EXCLUDED.phone AND w.day = EXCLUDED.day)
RETURNING phone, day
"""


def _column(values: dict[str, Any], plus_one: Any, same: Any) -> tuple[Any, ...] | None:
    """One transition as a row of the statement's arrays (None: not a known shape)."""
    if not values.keys() <= _KNOWN or values.get("lease_until", None) is not None:
        return None
    attempts = values.get("attempts", same)
    if attempts is plus_one:
        inc = 1
    elif attempts is same:
        inc = 0
    else:
        return None
    requeue = "next_attempt_at" in values
    if requeue != ("claimed_by" in values) or values.get("claimed_by") is not None:
        return None
    sent = "sent_at" in values
    if any(isinstance(v, sa.ColumnElement) for k, v in values.items() if k != "attempts"):
        return None
    if "reason" not in values or "status" not in values or "updated_at" not in values:
        return None
    return (
        values["status"],
        values["reason"],
        values["updated_at"],
        inc,
        requeue,
        values.get("next_attempt_at"),
        sent,
        values.get("sent_at"),
        values.get("provider_id"),
        values.get("subject"),
        values.get("body"),
    )


async def apply_transitions(
    conn: AsyncConnection, items: Sequence[Transition], plus_one: Any, same: Any
) -> list[bool] | None:
    """Apply ``items`` in one statement; None when one of them has a shape it cannot take.

    A later transition of the same claim in one batch does not apply (the first one took
    the message out of ``sending``), as with one statement per transition.
    """
    first: dict[tuple[int, str], int] = {}
    rows: list[tuple[Any, ...]] = []
    for index, (mid, worker, values, attempt) in enumerate(items):
        if (mid, worker) in first:
            continue
        row = _column(values, plus_one, same)
        if row is None:
            return None
        first[(mid, worker)] = index
        rows.append(
            (mid, worker, *row)
            + (
                attempt["at"],
                attempt["outcome"],
                attempt["error"],
                attempt["provider_id"],
                attempt["duration_ms"],
            )
        )
    arrays = tuple(list(column) for column in zip(*rows, strict=True))
    if not arrays:
        return []
    result = await conn.exec_driver_sql(_TRANSITIONS, arrays)
    rows_back: list[Any] = list(result.all())
    applied = {(row[0], row[1]) for row in rows_back}
    return [
        (mid, worker) in applied and first[(mid, worker)] == index
        for index, (mid, worker, _, _) in enumerate(items)
    ]


async def reserve_slots(
    conn: AsyncConnection, campaign: str, items: Sequence[tuple[str, str, int]]
) -> list[bool]:
    """Take one slot per (phone, day, limit) while fewer than ``limit`` are used.

    Several reservations of one number go in rounds (the n-th of each number in the
    n-th statement): one statement may not update a row twice, and the numbers' own
    order is kept. The first round locks every number in (day, phone) order; the later
    ones touch only numbers it already holds.
    """
    out = [False] * len(items)
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str], int] = {}
    for index, (phone, day, limit) in enumerate(items):
        if limit <= 0:
            continue
        n = seen.get((phone, day), 0)
        seen[(phone, day)] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(index)
    for members in rounds:
        phones = [items[i][0] for i in members]
        days = [items[i][1] for i in members]
        limits = [items[i][2] for i in members]
        result = await conn.exec_driver_sql(_RESERVE, (campaign, phones, days, limits))
        back: list[Any] = list(result.all())
        taken = {(row[0], row[1]) for row in back}
        for i in members:
            out[i] = (items[i][0], items[i][1]) in taken
    return out


# Planned messages: one statement per chunk over arrays, instead of SQLAlchemy's
# multi-row VALUES (18 bind parameters per row to build and send). Rows go in in plan
# order (ORDINALITY), as the VALUES list put them.
_INSERT = """
INSERT INTO messages (idem_key, campaign, kind, step, obligation, periods, units,
                      recipient_id, channel, address, due_at, next_attempt_at, expires_at,
                      status, reason, created_at, updated_at, items)
SELECT t.k, $1, t.kind, t.step, t.obligation, t.periods::json, t.units::json,
       t.recipient, t.channel, t.address, t.due, t.next_at, t.expires,
       t.status, t.reason, $2, $2, t.items::json
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[],
            $14::timestamptz[], $15::text[], $16::text[], $17::text[])
     WITH ORDINALITY AS t(k, kind, step, obligation, periods, units, recipient, channel,
                          address, due, next_at, expires, status, reason, items, n)
ORDER BY t.n
ON CONFLICT (idem_key) DO NOTHING
RETURNING idem_key
"""
_ROW = (
    "idem_key",
    "kind",
    "step",
    "obligation",
    "periods",
    "units",
    "recipient_id",
    "channel",
    "address",
    "due_at",
    "next_attempt_at",
    "expires_at",
    "status",
    "reason",
    "items",
)
_JSON = frozenset({"periods", "units", "items"})
_MOMENTS = ("due_at", "next_attempt_at", "expires_at")


async def insert_planned(
    conn: AsyncConnection, campaign: str, now: datetime, rows: Sequence[dict[str, Any]]
) -> set[str] | None:
    """Insert ``rows`` (already fitted to their columns); the keys that were new.

    None, with nothing written, when a moment is naive: the portable path refuses it with
    its own error. JSON is encoded as SQLAlchemy's ``JSON`` type does (``None`` → JSON
    ``null``), so both paths store the same values.
    """
    if now.tzinfo is None:
        return None
    for row in rows:
        for name in _MOMENTS:
            moment = row[name]
            if moment is not None and moment.tzinfo is None:
                return None
    columns = [
        [json.dumps(row[name]) for row in rows] if name in _JSON else [row[name] for row in rows]
        for name in _ROW
    ]
    result = await conn.exec_driver_sql(_INSERT, (campaign, now, *columns))
    return {row[0] for row in result.all()}
