"""Taking in a file or an e-mail: recognise the form, the unit and the period; record the
submission through the ledger, or put it before the office when anything is uncertain."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock
from ..model import CampaignModel
from ..store.ledger import Ledger
from ..submissions import NewSubmission, Source
from .decide import Decision, Hints, Incoming, IntakeSource, decide, mask
from .files import KeptFiles
from .infer import UnitIndex
from .mail import Mail, parse_mail
from .read import FormError, Grid, read_grids
from .store import IntakeStore

__all__ = ["Decision", "Hints", "Incoming", "Intake", "IntakeSource", "Outcome", "intake_file"]
log = structlog.get_logger("service.intake")
Status = Literal["recorded", "review", "duplicate"]


@dataclass
class Outcome:
    """What became of one file; ``message`` is for the operator (Chinese)."""

    filename: str
    status: Status
    message: str
    evidence_id: int | None = None
    review_id: int | None = None
    submission_ids: list[int] = field(default_factory=list)


@dataclass
class _Planned:
    """A new file of a fetched batch, read and decided, waiting for the group commit."""

    item: Incoming
    sha: str
    decision: Decision
    stored_path: str


class Intake:
    """Intake for one campaign: the same path for the CLI, the mailbox and the web upload."""

    def __init__(
        self,
        model: CampaignModel,
        engine: AsyncEngine,
        clock: Clock,
        state_dir: Path,
        actor: str = "intake",
    ) -> None:
        self.model = model
        self.clock = clock
        self.actor = actor
        self.files = state_dir / "intake"
        self.store = IntakeStore(engine, model.key, clock)
        self.ledger = Ledger(engine, model.key, clock)
        self.index = UnitIndex(model)
        self.kept = KeptFiles(self.files)

    async def take_message(
        self, raw: bytes, hints: Hints = Hints(), source: IntakeSource = "inbound-mail"
    ) -> list[Outcome]:
        """Every spreadsheet of an e-mail; a mail without one goes to review (never lost)."""
        mail = parse_mail(raw)
        now = self.clock.now()
        at = mail.date if mail.date is not None and mail.date <= now else now
        if not mail.attachments:
            return [await self._bare_mail(raw, mail.key, mail.sender, mail.subject, at, source)]
        if mail.message_id:
            # The same e-mail again (re-sent, re-synced): its attachments may differ in bytes
            # (a re-saved workbook) but it is one submission. Fewer evidence rows than
            # attachments means an earlier pass stopped midway: finish it, by file hash.
            seen = await self.store.by_message(mail.message_id[:500])
            if len(seen) >= len(mail.attachments):
                return [
                    Outcome(e.filename, "duplicate", "此邮件已收到过，不重复登记", e.id)
                    for e in seen
                ]
        return [
            await self.take_file(
                Incoming(att.filename, att.data, at, source, mail.sender, mail.message_id),
                hints,
                strict=False,
            )
            for att in mail.attachments
        ]

    async def take_messages(
        self, raws: Sequence[bytes], source: IntakeSource = "inbound-mail"
    ) -> list[list[Outcome] | Exception]:
        """A fetched batch of e-mails, with :meth:`take_message`'s result for each (or the
        exception it raised, which concerns that e-mail only).

        The common case (new e-mails with new files) costs one look-up query for the whole
        batch, then one transaction that records every such file of the batch (group
        commit): evidence, submissions, audit rows and review items together, or none of
        them. Anything unusual goes through :meth:`take_message` one e-mail at a time,
        after that commit: an e-mail without a spreadsheet, one already seen in part or
        whose file or Message-ID repeats within the batch, one that raised while being
        read, and the whole batch when the group commit fails (e.g. another process
        recorded one of its files meanwhile). So one bad e-mail never costs the others
        their recording, and per-e-mail idempotency stays what it is.
        """
        results: list[list[Outcome] | Exception | None] = [None] * len(raws)
        one_by_one: list[int] = []
        mails: list[tuple[int, Mail]] = []
        for i, raw in enumerate(raws):
            try:
                mail = parse_mail(raw)
            except Exception:  # take_message meets it again and reports it for this mail
                one_by_one.append(i)
                continue
            if mail.attachments:
                mails.append((i, mail))
            else:
                one_by_one.append(i)
        known = await self.store.known(
            {m.message_id[:500] for _, m in mails if m.message_id},
            {a.sha256 for _, m in mails for a in m.attachments},
        )
        by_sha = {e.sha256: e for e in known}
        finished_of: dict[str, int] = {}
        for e in known:
            if e.message_id and e.status != "pending":
                finished_of[e.message_id] = finished_of.get(e.message_id, 0) + 1
        now = self.clock.now()
        planned: list[tuple[int, list[_Planned]]] = []
        taken: set[str] = set()  # Message-IDs and file hashes of this batch so far
        for i, mail in mails:
            mid = mail.message_id[:500] if mail.message_id else None
            if mid and finished_of.get(mid, 0) >= len(mail.attachments):
                seen = [e for e in known if e.message_id == mid and e.status != "pending"]
                results[i] = [
                    Outcome(e.filename, "duplicate", "此邮件已收到过，不重复登记", e.id)
                    for e in seen
                ]
                continue
            keys = [a.sha256 for a in mail.attachments] + ([mid] if mid else [])
            if (
                (mid and mid in finished_of)
                or len(set(keys)) < len(keys)
                or any(k in taken or k in by_sha for k in keys)
            ):
                one_by_one.append(i)
                continue
            at = mail.date if mail.date is not None and mail.date <= now else now
            try:
                files = [
                    self._plan(Incoming(a.filename, a.data, at, source, mail.sender, mid), a.sha256)
                    for a in mail.attachments
                ]
            except Exception:
                one_by_one.append(i)
                continue
            taken.update(keys)
            planned.append((i, files))
        if planned:
            try:
                outcomes = await self._record_batch([f for _, files in planned for f in files])
            except Exception as exc:
                log.warning(
                    "group commit failed; taking the batch one e-mail at a time",
                    error=f"{type(exc).__name__}: {str(exc)[:200]}",
                )
                one_by_one += [i for i, _ in planned]
            else:
                it = iter(outcomes)
                for i, files in planned:
                    results[i] = [next(it) for _ in files]
        for i in sorted(one_by_one):
            try:
                results[i] = await self.take_message(raws[i], Hints(), source)
            except Exception as exc:
                results[i] = exc
        return [r if r is not None else [] for r in results]

    def _plan(self, item: Incoming, sha: str) -> _Planned:
        """Read and decide one new file, and keep its bytes: no database work."""
        try:
            decision = self.decide(read_grids(item.filename, item.data), item, Hints())
        except FormError as exc:
            decision = Decision(review=str(exc))
        return _Planned(item, sha, decision, str(self._keep(sha, item.data)))

    async def _record_batch(self, files: list[_Planned]) -> list[Outcome]:
        """Every planned file in one transaction; outcomes in the same order."""
        from .review import liaison_proposals  # local: review imports this module

        recorded = [f for f in files if not f.decision.review]
        async with self.store.engine.begin() as conn:
            eids = await self.store.insert_evidence(
                conn,
                [
                    {
                        "sha256": f.sha,
                        "source": f.item.source,
                        "message_id": f.item.message_id,
                        "filename": f.item.filename[:500],
                        "sender": f.item.sender,
                        "received_at": f.item.received_at,
                        "stored_path": f.stored_path,
                        "status": "review" if f.decision.review else "recorded",
                        "unit_id": None if f.decision.review else _unit(f.decision),
                        "obligation": f.decision.obligation,
                        "period": f.decision.period,
                        "rows": [r.as_json() for r in f.decision.rows],
                        "problems": [p for r in f.decision.rows for p in r.problems],
                    }
                    for f in files
                ],
            )
            eid_of = {id(f): eid for f, eid in zip(files, eids, strict=True)}
            subs: list[NewSubmission] = []
            for f in recorded:
                d, eid = f.decision, eid_of[id(f)]
                assert d.obligation and d.period
                note = f"intake #{eid} {f.item.filename}"[:500]
                subs += [
                    NewSubmission(
                        unit,
                        d.obligation,
                        d.period,
                        n,
                        f.item.received_at,
                        cast(Source, f.item.source),
                        note,
                    )
                    for unit, n in d.counts.items()
                ]
            sub_ids = iter(await self.ledger.record_on(conn, subs, self.actor))
            ids_of = {id(f): [next(sub_ids) for _ in f.decision.counts] for f in recorded}
            await self.store.set_submission_ids(
                conn, {eid_of[id(f)]: ids_of[id(f)] for f in recorded}
            )
            wanted: list[tuple[str, int | None, str, dict[str, Any]]] = []
            owners: list[int] = []  # id() of the file each review item belongs to
            for f in files:
                d = f.decision
                found = (
                    [("submission", d.review, _proposal(f.item, d))]
                    if d.review
                    else [("liaison", r, p) for r, p in liaison_proposals(self, d)]
                )
                wanted += [(kind, eid_of[id(f)], reason, p) for kind, reason, p in found]
                owners += [id(f)] * len(found)
            rids_of: dict[int, list[int]] = {}
            for owner, rid in zip(
                owners, await self.store.insert_reviews(conn, wanted), strict=True
            ):
                rids_of.setdefault(owner, []).append(rid)
        return [
            self._review_outcome(f.item, f.decision, eid_of[id(f)], rids_of[id(f)][0])
            if f.decision.review
            else self._recorded_outcome(
                f.item, f.decision, eid_of[id(f)], ids_of[id(f)], rids_of.get(id(f), [])
            )
            for f in files
        ]

    async def take_file(self, item: Incoming, hints: Hints, strict: bool) -> Outcome:
        """Record one file. ``strict``: a file that cannot be read raises FormError and
        nothing is kept (an operator is there to read it); otherwise it goes to review."""
        sha = hashlib.sha256(item.data).hexdigest()
        existing = await self.store.by_sha(sha)
        if existing is not None and existing.status != "pending":
            return Outcome(
                item.filename,
                "duplicate",
                f"此文件已于 {self._local(existing.received_at)} 收到过（#{existing.id}，"
                f"{_STATUS_WORDS.get(existing.status, existing.status)}），不重复登记",
                existing.id,
            )
        try:
            grids = read_grids(item.filename, item.data)
            decision = self.decide(grids, item, hints)
        except FormError as exc:
            if strict:
                raise
            decision = Decision(review=str(exc))
        eid, fresh = await self.store.claim(
            sha256=sha,
            source=item.source,
            message_id=item.message_id,
            filename=item.filename[:500],
            sender=item.sender,
            received_at=item.received_at,
            stored_path=str(self._keep(sha, item.data)),
        )
        if not fresh:
            known = await self.store.evidence(eid)
            if known is not None and known.status != "pending":
                return Outcome(item.filename, "duplicate", "此文件已收到过，不重复登记", eid)
        return await self._conclude(eid, item, decision, recover=not fresh)

    async def _conclude(
        self, eid: int, item: Incoming, d: Decision, recover: bool = False
    ) -> Outcome:
        rows = [r.as_json() for r in d.rows]
        problems = [p for r in d.rows for p in r.problems]
        common = {"rows": rows, "problems": problems, "obligation": d.obligation}
        if d.review:
            await self.store.finish(eid, status="review", period=d.period, **common)
            rid = await self.store.add_review("submission", eid, d.review, _proposal(item, d))
            return self._review_outcome(item, d, eid, rid)
        assert d.obligation and d.period
        ids = await self.record(
            eid, d.obligation, d.period, d.counts, item.received_at, item, recover=recover
        )
        await self.store.finish(
            eid, status="recorded", unit_id=_unit(d), period=d.period, submission_ids=ids, **common
        )
        from .review import propose_liaisons  # local: review imports this module

        reviews = await propose_liaisons(self, eid, d)
        return self._recorded_outcome(item, d, eid, ids, reviews)

    def _review_outcome(self, item: Incoming, d: Decision, eid: int, rid: int) -> Outcome:
        log.info("intake needs review", evidence=eid, review=rid, sender=mask(item.sender))
        return Outcome(item.filename, "review", f"待人工审核（#{rid}）：{d.review}", eid, rid)

    def _recorded_outcome(
        self, item: Incoming, d: Decision, eid: int, ids: list[int], reviews: list[int]
    ) -> Outcome:
        problems = sum(len(r.problems) for r in d.rows)
        outcome = Outcome(
            item.filename,
            "recorded",
            f"已登记 {len(ids)} 个单位的 {d.obligation}@{d.period}："
            + "、".join(self.model.directory.units[u].name for u in d.units)
            + (f"；{problems} 处数值有问题，见报表" if problems else ""),
            eid,
            submission_ids=ids,
        )
        if reviews:
            outcome.message += f"；联络员变更待确认：{'、'.join(f'#{r}' for r in reviews)}"
        log.info("intake recorded", evidence=eid, n=len(ids), sender=mask(item.sender))
        return outcome

    async def record(
        self,
        eid: int,
        obligation: str,
        period: str,
        counts: dict[str, int],
        at: datetime,
        item: Incoming | None,
        recover: bool = True,
    ) -> list[int]:
        """Record through the ledger. ``recover``: the evidence row existed before this
        call (a crashed pass, a review decision), so look for what an earlier attempt
        recorded under its note first. Fresh evidence skips that (unindexed) look-up."""
        if recover and (done := await self.store.submissions_noted(eid)):
            return done
        name = item.filename if item else ""
        source = cast(Source, item.source if item else "upload")
        subs = [
            NewSubmission(unit, obligation, period, n, at, source, f"intake #{eid} {name}"[:500])
            for unit, n in counts.items()
        ]
        return await self.ledger.record(subs, self.actor)

    def decide(self, grids: list[Grid], item: Incoming, hints: Hints) -> Decision:
        """Which obligation, period and units; ``review`` says why a person must decide."""
        return decide(self.model, self.index, grids, item, hints)

    async def _bare_mail(
        self,
        raw: bytes,
        key: str,
        sender: str | None,
        subject: str,
        at: datetime,
        source: IntakeSource,
    ) -> Outcome:
        sha = hashlib.sha256(key.encode()).hexdigest()
        item = Incoming(f"{subject or '(无主题)'}.eml", raw, at, source, sender, key)
        existing = await self.store.by_sha(sha)
        if existing is not None:
            return Outcome(item.filename, "duplicate", "此邮件已收到过，不重复处理", existing.id)
        eid, fresh = await self.store.claim(
            sha256=sha,
            source=source,
            message_id=key[:500],
            filename=item.filename[:500],
            sender=sender,
            received_at=at,
            stored_path=str(self._keep(hashlib.sha256(raw).hexdigest(), raw)),
        )
        if not fresh:
            return Outcome(item.filename, "duplicate", "此邮件已收到过，不重复处理", eid)
        return await self._conclude(eid, item, Decision(review="邮件没有表格附件，请人工判断"))

    def _local(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.model.schedule.campaign.tz):%Y-%m-%d %H:%M}"

    def _keep(self, sha: str, data: bytes) -> Path:
        """Content-addressed copy, readable by the service user only (0600)."""
        return self.kept.keep(sha, data)


_STATUS_WORDS = {"recorded": "已登记", "review": "待审核", "rejected": "已驳回"}


def _proposal(item: Incoming, d: Decision) -> dict[str, Any]:
    """What a submission review item proposes (the office may override any of it)."""
    return {
        "filename": item.filename,
        "sender": item.sender,
        "units": sorted(d.units),
        "obligation": d.obligation,
        "period": d.period,
    }


def _unit(d: Decision) -> str | None:
    return next(iter(d.units)) if len(d.units) == 1 else None


async def intake_file(
    model: CampaignModel,
    engine: AsyncEngine,
    clock: Clock,
    state_dir: Path,
    filename: str,
    data: bytes,
    *,
    hints: Hints = Hints(),
    actor: str = "web",
) -> list[Outcome]:
    """The web console's upload (and ``service intake``): a form file or a whole .eml."""
    intake = Intake(model, engine, clock, state_dir, actor)
    if filename.lower().endswith(".eml"):
        return await intake.take_message(data, hints, source="upload")
    item = Incoming(filename, data, clock.now(), "upload")
    return [await intake.take_file(item, hints, strict=True)]
