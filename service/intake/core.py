"""Taking in a file or an e-mail: recognise the form, the unit and the period; record the
submission through the ledger, or put it before the office when anything is uncertain."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ..channels.base import mask_address
from ..clock import Clock
from ..errors import LedgerError
from ..model import CampaignModel
from ..store.ledger import Ledger
from ..submissions import MAX_COUNT, NewSubmission, Source, check
from .forms import Row, fingerprint, form_of, forms_in, read_tables
from .infer import UnitIndex, infer_period
from .mail import parse_mail
from .read import FormError, Grid, read_grids
from .store import IntakeStore

log = structlog.get_logger("service.intake")
IntakeSource = Literal["inbound-mail", "upload"]
Status = Literal["recorded", "review", "duplicate"]
_NOT_CONTENT = {"remarks"}


@dataclass(frozen=True)
class Hints:
    """What the operator says on the command line (or the web form): wins over inference."""

    unit: str | None = None
    obligation: str | None = None
    period: str | None = None


@dataclass(frozen=True)
class Incoming:
    filename: str
    data: bytes
    received_at: datetime
    source: IntakeSource
    sender: str | None = None
    message_id: str | None = None


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
class Decision:
    obligation: str | None = None
    period: str | None = None
    units: dict[str, list[Row]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    review: str = ""  # why the office must decide; empty when the file can be recorded
    counts: dict[str, int] = field(default_factory=dict)


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
            proposal = {
                "filename": item.filename,
                "sender": item.sender,
                "units": sorted(d.units),
                "obligation": d.obligation,
                "period": d.period,
            }
            rid = await self.store.add_review("submission", eid, d.review, proposal)
            log.info("intake needs review", evidence=eid, review=rid, sender=_mask(item.sender))
            return Outcome(item.filename, "review", f"待人工审核（#{rid}）：{d.review}", eid, rid)
        assert d.obligation and d.period
        ids = await self.record(
            eid, d.obligation, d.period, d.counts, item.received_at, item, recover=recover
        )
        unit = next(iter(d.units)) if len(d.units) == 1 else None
        await self.store.finish(
            eid, status="recorded", unit_id=unit, period=d.period, submission_ids=ids, **common
        )
        outcome = Outcome(
            item.filename,
            "recorded",
            f"已登记 {len(ids)} 个单位的 {d.obligation}@{d.period}："
            + "、".join(self.model.directory.units[u].name for u in d.units)
            + (f"；{len(problems)} 处数值有问题，见报表" if problems else ""),
            eid,
            submission_ids=ids,
        )
        from .review import propose_liaisons  # local: review imports this module

        reviews = await propose_liaisons(self, eid, d)
        if reviews:
            outcome.message += f"；联络员变更待确认：{'、'.join(f'#{r}' for r in reviews)}"
        log.info("intake recorded", evidence=eid, n=len(ids), sender=_mask(item.sender))
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
        d = Decision()
        forms = forms_in(self.model.schedule)
        if hints.obligation:
            try:
                ob = self.model.schedule.obligation(hints.obligation)
            except KeyError:
                raise LedgerError(f"obligation: unknown obligation {hints.obligation!r}") from None
            d.obligation = ob.key
        else:
            found = fingerprint(grids, forms)
            if not found:
                d.review = "表头与任何附件（表格）都对不上，无法判断报送的是哪一项"
                return d
            if len(found) > 1 and found[0][1] == found[1][1]:
                d.review = f"表头同时符合 {found[0][0]} 和 {found[1][0]}，无法判断"
                return d
            d.obligation = found[0][0]
        ob = self.model.schedule.obligation(d.obligation)
        form = form_of(ob)
        if form is not None:
            d.rows = [r for t in read_tables(grids, form) for r in t.rows if _has_content(r, form)]
            if not d.rows:
                d.review = f"没有找到填写了数据的“{form.attachment}”表格行"
                return d
        else:  # no declared form (e.g. leads): every non-blank line after a header is an item
            d.rows = [
                Row(g.sheet, no, None, {"text": " ".join(str(v) for v in vals if v is not None)})
                for g in grids
                for no, vals in g.rows[1:]
            ]
        occ = (
            self.model.occurrence(d.obligation, hints.period)
            if hints.period
            else infer_period(self.model, d.obligation, item.received_at)
        )
        if occ is None:
            d.review = f"{d.obligation} 没有期次 {hints.period!r}"
            return d
        d.period = occ.period
        d.review = self._assign_units(d, item, hints)
        if d.review:
            return d
        for unit, rows in d.units.items():
            d.counts[unit] = min(MAX_COUNT, max(1, len(rows))) if occ.quota_goal > 1 else 1
            try:
                check(self.model, unit, d.obligation, d.period, d.counts[unit])
            except LedgerError as exc:
                d.review = f"{self.model.directory.units[unit].name}：{exc}"
                return d
        return d

    def _assign_units(self, d: Decision, item: Incoming, hints: Hints) -> str:
        """Fill ``d.units``; return why not when the unit is unknown, unclear or contradicted."""
        idx = self.index
        if hints.unit and hints.unit not in idx.by_id:
            raise LedgerError(f"unit: unknown unit {hints.unit!r}")
        senders = idx.of_sender(item.sender)
        by_file = idx.in_file_name(item.filename)
        fallback = hints.unit or (senders[0] if len(senders) == 1 else None)
        fallback = fallback or (by_file[0] if len(by_file) == 1 else None)
        for row in d.rows:
            if row.unit_name:
                ids = idx.by_name(row.unit_name)
                if len(ids) != 1:
                    what = "对应多个单位" if ids else "在名录中找不到"
                    return f"表内单位名称“{row.unit_name}”{what}（{row.sheet} 第{row.row}行）"
                unit = ids[0]
                if hints.unit and unit != hints.unit:
                    return f"表内单位“{row.unit_name}”与指定的单位 {hints.unit} 不一致"
            elif fallback:
                unit = fallback
            else:
                return "无法判断是哪个单位报送的：表内没有单位名称，发件人和文件名也对不上名录"
            row.unit = unit
            d.units.setdefault(unit, []).append(row)
        if senders and not hints.unit:
            allowed = {u for s in senders for u in self.model.directory.subtree(s)}
            strangers = [u for u in d.units if u not in allowed]
            if strangers:
                names = "、".join(idx.by_id[u].name for u in strangers)
                return f"发件人（{_mask(item.sender)}）不属于表内单位 {names} 或其上级"
        return ""

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
        folder = self.files / sha[:2]
        path = folder / sha
        if path.exists():
            return path
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".in-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


_STATUS_WORDS = {"recorded": "已登记", "review": "待审核", "rejected": "已驳回"}


def _has_content(row: Row, form: Any) -> bool:
    skip = {form.unit_field, *_NOT_CONTENT}
    return any(v is not None for k, v in row.values.items() if k not in skip)


def _mask(address: str | None) -> str:
    return mask_address(address) if address else "-"


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
