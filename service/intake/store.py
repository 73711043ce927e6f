"""Intake's tables: evidence (received files and their rows), review queue, directory changes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..clock import Clock
from ..store.bulk import insert_ids
from ..store.tables import directory_changes, intake_evidence, intake_review, submissions


@dataclass(frozen=True)
class Evidence:
    id: int
    sha256: str
    source: str
    message_id: str | None
    filename: str
    sender: str | None
    received_at: datetime
    stored_path: str
    unit_id: str | None
    obligation: str | None
    period: str | None
    rows: list[dict[str, Any]]
    problems: list[str]
    status: str
    submission_ids: list[int]


@dataclass(frozen=True)
class ReviewItem:
    id: int
    kind: str
    evidence_id: int | None
    reason: str
    proposal: dict[str, Any]
    status: str
    created_at: datetime
    decided_by: str | None
    decision: str


_EVIDENCE_COLUMNS = [getattr(intake_evidence.c, f) for f in Evidence.__dataclass_fields__]
_REVIEW_COLUMNS = [
    intake_review.c.id,
    intake_review.c.kind,
    intake_review.c.evidence_id,
    intake_review.c.reason,
    intake_review.c.proposal,
    intake_review.c.status,
    intake_review.c.created_at,
    intake_review.c.decided_by,
    intake_review.c.decision,
]


class IntakeStore:
    """One campaign's intake records. Idempotence rests on the unique (campaign, sha256)."""

    def __init__(self, engine: AsyncEngine, campaign: str, clock: Clock) -> None:
        self.engine = engine
        self.campaign = campaign
        self.clock = clock

    async def by_sha(self, sha: str) -> Evidence | None:
        c = intake_evidence.c
        query = sa.select(*_EVIDENCE_COLUMNS).where(c.campaign == self.campaign, c.sha256 == sha)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Evidence(*row) if row else None

    async def by_message(self, message_id: str) -> list[Evidence]:
        """Finished evidence from one e-mail (a resend keeps its Message-ID)."""
        c = intake_evidence.c
        query = sa.select(*_EVIDENCE_COLUMNS).where(
            c.campaign == self.campaign, c.message_id == message_id, c.status != "pending"
        )
        async with self.engine.connect() as conn:
            return [Evidence(*r) for r in (await conn.execute(query)).all()]

    async def known(self, message_ids: Collection[str], shas: Collection[str]) -> list[Evidence]:
        """Evidence (any status) of these e-mails or files: one query for a fetched batch."""
        if not message_ids and not shas:
            return []
        c = intake_evidence.c
        query = sa.select(*_EVIDENCE_COLUMNS).where(
            c.campaign == self.campaign,
            sa.or_(c.message_id.in_(sorted(message_ids)), c.sha256.in_(sorted(shas))),
        )
        async with self.engine.connect() as conn:
            return [Evidence(*r) for r in (await conn.execute(query)).all()]

    async def evidence(self, evidence_id: int) -> Evidence | None:
        c = intake_evidence.c
        query = sa.select(*_EVIDENCE_COLUMNS).where(
            c.campaign == self.campaign, c.id == evidence_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Evidence(*row) if row else None

    async def claim(self, **values: Any) -> tuple[int, bool]:
        """Insert a pending evidence row; (id, True), or (existing id, False) for a known sha."""
        row = {
            "campaign": self.campaign,
            "rows": [],
            "problems": [],
            "submission_ids": [],
            "status": "pending",
            "created_at": self.clock.now(),
            **values,
        }
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(intake_evidence.insert().values(row))
                assert result.inserted_primary_key is not None
                return int(result.inserted_primary_key[0]), True
        except IntegrityError:
            existing = await self.by_sha(values["sha256"])
            assert existing is not None
            return existing.id, False

    async def finish(self, evidence_id: int, **values: Any) -> None:
        c = intake_evidence.c
        async with self.engine.begin() as conn:
            await conn.execute(intake_evidence.update().where(c.id == evidence_id).values(**values))

    async def submissions_noted(self, evidence_id: int) -> list[int]:
        """Submissions a crashed run already recorded for this evidence (by their note)."""
        c = submissions.c
        query = sa.select(c.id).where(
            c.campaign == self.campaign, c.note.like(f"intake #{evidence_id} %")
        )
        async with self.engine.connect() as conn:
            return [int(i) for i in (await conn.execute(query)).scalars()]

    async def for_occurrence(self, obligation: str, period: str) -> list[Evidence]:
        c = intake_evidence.c
        query = (
            sa.select(*_EVIDENCE_COLUMNS)
            .where(
                c.campaign == self.campaign,
                c.obligation == obligation,
                c.period == period,
                c.status == "recorded",
            )
            .order_by(c.received_at, c.id)
        )
        async with self.engine.connect() as conn:
            return [Evidence(*r) for r in (await conn.execute(query)).all()]

    # -- group commit: several files' rows in the caller's transaction -----------------------

    async def insert_evidence(
        self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
    ) -> list[int]:
        """Finished evidence rows (status already known); their ids, in order."""
        if not rows:
            return []
        now = self.clock.now()
        return await insert_ids(
            conn,
            intake_evidence,
            [
                {"campaign": self.campaign, "submission_ids": [], "created_at": now, **row}
                for row in rows
            ],
            ["sha256"],
        )

    async def set_submission_ids(
        self, conn: AsyncConnection, ids_by_evidence: Mapping[int, list[int]]
    ) -> None:
        if not ids_by_evidence:
            return
        c = intake_evidence.c
        await conn.execute(
            intake_evidence.update()
            .where(c.id == sa.bindparam("eid"))
            .values(submission_ids=sa.bindparam("sids", type_=c.submission_ids.type)),
            [{"eid": eid, "sids": ids} for eid, ids in ids_by_evidence.items()],
        )

    async def insert_reviews(
        self,
        conn: AsyncConnection,
        items: Sequence[tuple[str, int | None, str, dict[str, Any]]],
    ) -> list[int]:
        """(kind, evidence id, reason, proposal) as open review items; their ids, in order."""
        if not items:
            return []
        now = self.clock.now()
        return await insert_ids(
            conn,
            intake_review,
            [
                {
                    "campaign": self.campaign,
                    "kind": kind,
                    "evidence_id": eid,
                    "reason": reason,
                    "proposal": proposal,
                    "status": "open",
                    "created_at": now,
                }
                for kind, eid, reason, proposal in items
            ],
            ["evidence_id", "kind", "reason"],
        )

    # -- review queue --------------------------------------------------------------------

    async def add_review(
        self, kind: str, evidence_id: int | None, reason: str, proposal: dict[str, Any]
    ) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                intake_review.insert().values(
                    campaign=self.campaign,
                    kind=kind,
                    evidence_id=evidence_id,
                    reason=reason,
                    proposal=proposal,
                    status="open",
                    created_at=self.clock.now(),
                )
            )
            assert result.inserted_primary_key is not None
            return int(result.inserted_primary_key[0])

    async def reviews(self, status: str | None = "open") -> list[ReviewItem]:
        c = intake_review.c
        query = sa.select(*_REVIEW_COLUMNS).where(c.campaign == self.campaign).order_by(c.id)
        if status:
            query = query.where(c.status == status)
        async with self.engine.connect() as conn:
            return [ReviewItem(*r) for r in (await conn.execute(query)).all()]

    async def review(self, review_id: int) -> ReviewItem | None:
        c = intake_review.c
        query = sa.select(*_REVIEW_COLUMNS).where(c.campaign == self.campaign, c.id == review_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return ReviewItem(*row) if row else None

    async def decide(self, review_id: int, status: str, actor: str, decision: str) -> bool:
        """Close an open item; False when someone else already decided it."""
        c = intake_review.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                intake_review.update()
                .where(c.campaign == self.campaign, c.id == review_id, c.status == "open")
                .values(
                    status=status,
                    decided_at=self.clock.now(),
                    decided_by=actor,
                    decision=decision,
                )
            )
            return bool(result.rowcount)

    async def add_directory_change(
        self,
        review_id: int,
        unit: str,
        person: str,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        file: str,
        actor: str,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                directory_changes.insert().values(
                    campaign=self.campaign,
                    review_id=review_id,
                    unit_id=unit,
                    person_id=person,
                    before=before,
                    after=after,
                    file=file,
                    applied_at=self.clock.now(),
                    applied_by=actor,
                )
            )
