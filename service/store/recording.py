"""Recording delivery results the database can hold: bounded, cleaned, masked, salvaged.

A delivery result must always be recorded: a message left ``sending`` is sent again once
its lease expires. What the service records but does not choose (a provider's id, a
peer's error text, a rendered body) is made to fit here, and a transition the database
still refuses is replaced by a ``failed`` one that says why (:func:`salvage`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from ..logs import mask_text
from .limits import clean_text, column_limit, fit
from .tables import delivery_attempts, messages

# (message id, worker, new column values, delivery_attempts row): one queued transition.
Transition = tuple[int, str, dict[str, Any], dict[str, Any]]


def is_connection_failure(exc: BaseException) -> bool:
    """The database (not a row) failed: recording row by row cannot help."""
    return isinstance(exc, OSError | OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _cause(exc: BaseException) -> str:
    """One masked line saying why the database refused a row."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = f"{type(orig).__name__}: {orig}".splitlines()[0]
    return clean_text(mask_text(text))[:300]


INT32_MAX = 2**31 - 1
# A worker id is recorded in both columns: it must fit the shorter.
WORKER_CHARS = min(
    column_limit(messages, "claimed_by") or 64, column_limit(delivery_attempts, "worker") or 64
)
_REASON_CHARS = 2000
_PROVIDER_ID_CHARS = column_limit(messages, "provider_id") or 128


def bound_provider_id(provider_id: str | None) -> str | None:
    """A provider's message id as recorded: at most the column's 128 characters.

    Providers choose their ids; a longer one keeps its first 111 characters, ``~`` and 16
    hex digits of its SHA-256 (README, "Channels"), so it still fits and stays distinct.
    """
    return None if provider_id is None else fit(provider_id, _PROVIDER_ID_CHARS)


def reason_text(text: str) -> str:
    return clean_text(mask_text(text))[:_REASON_CHARS]


# Columns a planned message fills from the campaign's inputs (ids, addresses, keys).
_PLANNED_LIMITS = [
    (name, limit)
    for name in ("idem_key", "kind", "step", "obligation", "recipient_id", "channel", "address")
    if (limit := column_limit(messages, name)) is not None
]


def bounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Planned rows whose values fit their columns; one that does not ends ``failed``.

    Its values are fitted (a prefix and a hash: the same message fits the same way at
    every re-planning, so it is inserted once) and the reason names the columns.
    """
    for row in rows:
        over = [(n, limit) for n, limit in _PLANNED_LIMITS if len(row[n] or "") > limit]
        if over:
            row.update({n: fit(row[n], limit) for n, limit in over})
            row["status"] = "failed"
            row["reason"] = "无法保存：" + "，".join(
                f"{n} 超过 {limit} 个字符" for n, limit in over
            )
    return rows


def salvage(item: Transition, exc: BaseException) -> Transition:
    """The transition that replaces one the database refused: ``failed`` with the cause."""
    mid, worker, values, attempt = item
    intended = attempt["outcome"]
    what = "已被对方接收，不会重发" if intended == "sent" else intended
    reason = reason_text(f"无法记录发送结果（{what}）: {_cause(exc)}")
    failed: dict[str, Any] = {
        "status": "failed",
        "reason": reason,
        "updated_at": values["updated_at"],
        "lease_until": None,
        "attempts": values.get("attempts", messages.c.attempts),
    }
    record = attempt | {"outcome": "unrecorded", "error": reason, "provider_id": None}
    return mid, worker, failed, record
