"""The dispatcher: claim due messages, re-check their reason, render, send, record.

Every claimed message ends in exactly one transition: ``sent``, ``cancelled`` (its reason
disappeared), ``stale`` (it stopped making sense), ``failed`` (permanent error or
retries exhausted), or back to ``pending`` for a retry with backoff or a quiet-hours wait.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

import structlog

from .channels.base import (
    Attachment,
    Channel,
    DeliveryError,
    Envelope,
    SendResult,
    StatusQuery,
    mask_address,
    mask_text,
)
from .clock import Clock
from .directory import Person
from .messages import XLSX_MIME, digest_context, digest_csv, digest_rows, digest_xlsx, unit_context
from .runtime import Runtime
from .status import Counts
from .steps import sms_window_open
from .store.ledger import Ledger
from .store.outbox import Claimed, Outbox

log = structlog.get_logger("service.dispatcher")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 60.0  # seconds; doubles per attempt
    max_delay: float = 3600.0
    lease: timedelta = timedelta(minutes=5)
    batch: int = 200
    concurrency: int = 8
    # Sent but not yet recorded, at most: the sender does not wait for each result's
    # commit (they share group commits), but a lagging store soon pauses sending. A crash
    # can resend at most this many (plus those in flight); see README "crash window".
    unrecorded: int = 32

    def delay(self, attempts: int, rng: random.Random, hint: float | None = None) -> float:
        """Exponential backoff with full jitter, never shorter than the peer's hint."""
        cap = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return max(hint or 0.0, rng.uniform(cap / 2, cap))


@dataclass
class Stats:
    claimed: int = 0
    sent: int = 0
    cancelled: int = 0
    stale: int = 0
    failed: int = 0
    retried: int = 0
    deferred: int = 0
    lost_lease: int = 0


@dataclass
class Dispatcher:
    runtime: Runtime
    outbox: Outbox
    ledger: Ledger
    channels: Mapping[str, Channel]
    clock: Clock
    worker: str
    policy: RetryPolicy = RetryPolicy()
    rng: random.Random = field(default_factory=random.Random)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _sms_today: dict[tuple[str, str], int] = field(default_factory=dict)
    # Per run: each message's queued transition (task, intended outcome, key).
    _records: list[tuple[asyncio.Future[bool], str, str]] = field(default_factory=list)
    _recorded_ids: set[int] = field(default_factory=set)  # per batch
    _unrecorded: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    _broken: list[BaseException] = field(default_factory=list)

    async def run(self) -> Stats:
        """Claim and process batches until nothing is due (or a stop was requested).

        Results are recorded in the background (group commits) while the next messages
        and batches are sent; the run waits for all of them before it returns.
        """
        total = Stats()
        self._records = []
        self._broken = []
        self._unrecorded = asyncio.Semaphore(self.policy.unrecorded)
        try:
            while not self.stopping.is_set() and not self._broken:
                now = self.clock.now()
                batch = await self.outbox.claim(
                    self.worker, now, self.policy.batch, self.policy.lease
                )
                if not batch:
                    break
                total.claimed += len(batch)
                await self._process_batch(batch, now)
                self._count_done(total)  # a national run's records are not all kept
        finally:
            await self._settle(total)
        if self._broken:
            raise self._broken[0]
        return total

    async def _settle(self, stats: Stats) -> None:
        """Wait for every queued transition; count outcomes and lost leases."""
        await asyncio.gather(*(t for t, _, _ in self._records), return_exceptions=True)
        self._count_done(stats)

    def _count_done(self, stats: Stats) -> None:
        """Count the committed transitions (outcome or lost lease) and forget them."""
        pending = []
        for record in self._records:
            task, outcome, key = record
            if not task.done():
                pending.append(record)
                continue
            if task.cancelled() or task.exception() is not None:
                continue  # in ``_broken`` already
            ok = task.result()
            if not ok and outcome == "sent":
                log.error(
                    "sent but lease lost: another worker may resend (same Message-ID)", key=key
                )
            name = outcome if ok else "lost_lease"
            setattr(stats, name, getattr(stats, name) + 1)
        self._records = pending

    async def _process_batch(self, batch: list[Claimed], now: datetime) -> None:
        units = sorted({u for m in batch for u in m.units})
        counts = await self.ledger.counts_for(units, as_of=now)
        await self._load_sms_counts(batch, now)
        sem = asyncio.Semaphore(self.policy.concurrency)
        broken = self._broken
        pending = list(batch)
        self._recorded_ids = set()

        async def one(msg: Claimed) -> None:
            async with sem:
                if self.stopping.is_set() or broken:
                    return
                pending.remove(msg)
                await self._unrecorded.acquire()
                try:
                    await self._process(msg, counts, now)
                except Exception as exc:
                    # The store failed even after reconnecting: send nothing more. What is
                    # left stays claimed and returns when its lease expires.
                    broken.append(exc)
                if msg.id not in self._recorded_ids:
                    self._unrecorded.release()

        await asyncio.gather(*(one(m) for m in batch))
        if pending and not broken:  # stop requested: hand back what never started
            await self.outbox.release(pending, self.worker, self.clock.now())

    def _record(self, msg: Claimed, transition: Awaitable[bool], outcome: str) -> str:
        """Queue a message's one transition without waiting for its commit.

        The group commit writes it with whatever else has queued up; :meth:`run` waits
        for all of them (and counts lost leases) before it returns.
        """
        task = asyncio.ensure_future(transition)
        task.add_done_callback(self._recorded)
        self._records.append((task, outcome, msg.key))
        self._recorded_ids.add(msg.id)
        return outcome

    def _recorded(self, task: asyncio.Future[bool]) -> None:
        self._unrecorded.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._broken.append(exc)  # the store failed even after reconnecting

    async def _process(self, msg: Claimed, counts: Counts, now: datetime) -> str:
        rt = self.runtime
        person = rt.person(msg.recipient_id)
        try:
            if person is None:
                return await self._end(
                    msg, now, "cancelled", "recipient is no longer in the directory"
                )
            if msg.expires_at is not None and now > msg.expires_at:
                return await self._end(
                    msg, now, "stale", f"expired at {msg.expires_at.isoformat()}"
                )
            if msg.channel == "sms" and (verdict := await self._sms_window(msg, now)):
                return verdict
            ctx, attachments = self._context(msg, person, counts, now)
            if ctx is None:
                return await self._end(
                    msg, now, "cancelled", "reason disappeared: submitted meanwhile"
                )
            envelope = self._envelope(msg, person, ctx, attachments)
        except Exception as exc:  # a template or data bug must not leave the message claimed
            log.exception("message preparation failed", key=msg.key)
            return await self._end(
                msg, now, "failed", f"internal error: {type(exc).__name__}: {exc}"
            )
        if msg.channel != "sms":
            return await self._send(msg, envelope, now)
        slot = self._sms_slot(person, now)
        if self._sms_today.get(slot, 0) >= self.runtime.model.schedule.campaign.sms_daily_cap:
            cap = self.runtime.model.schedule.campaign.sms_daily_cap
            return await self._end(
                msg,
                now,
                "cancelled",
                f"daily SMS cap reached ({cap} per recipient); the email copy carries the message",
            )
        # Reserve before the await so concurrent sends respect the cap; give the slot back
        # unless the provider accepted the message.
        self._sms_today[slot] = self._sms_today.get(slot, 0) + 1
        outcome = await self._send(msg, envelope, now)
        if outcome != "sent":
            self._sms_today[slot] -= 1
        return outcome

    async def _sms_window(self, msg: Claimed, now: datetime) -> str | None:
        """Outside the sending window an SMS waits for it (no attempt is counted)."""
        camp = self.runtime.model.schedule.campaign
        opens = sms_window_open(now, camp.sending_window, self.runtime.model.calendar, camp.tz)
        if opens <= now:
            return None
        if msg.expires_at is not None and opens > msg.expires_at:
            return await self._end(msg, now, "stale", "no SMS sending window before it expired")
        return self._record(
            msg,
            self.outbox.retry_later(
                msg,
                self.worker,
                now,
                opens,
                "waiting for the SMS sending window",
                count_attempt=False,
                outcome="deferred",
            ),
            "deferred",
        )

    def _sms_slot(self, person: Person, now: datetime) -> tuple[str, str]:
        tz = self.runtime.model.schedule.campaign.tz
        return person.id, now.astimezone(tz).date().isoformat()

    async def _load_sms_counts(self, batch: list[Claimed], now: datetime) -> None:
        """One query per batch for the daily SMS cap (not one per message)."""
        camp = self.runtime.model.schedule.campaign
        local = now.astimezone(camp.tz)
        day = local.date().isoformat()
        if any(k[1] != day for k in self._sms_today):
            self._sms_today = {k: v for k, v in self._sms_today.items() if k[1] == day}
        wanted = sorted(
            {m.recipient_id for m in batch if m.channel == "sms"} - {k[0] for k in self._sms_today}
        )
        if wanted:
            day_start = datetime.combine(local.date(), dtime(0), tzinfo=camp.tz)
            sent = await self.outbox.sms_sent_since(wanted, day_start)
            for rid in wanted:
                self._sms_today[(rid, day)] = sent.get(rid, 0)

    def _context(
        self, msg: Claimed, person: Person, counts: Counts, now: datetime
    ) -> tuple[dict[str, Any] | None, tuple[Attachment, ...]]:
        rt = self.runtime
        model = rt.model
        if msg.kind == "digest":
            rows = digest_rows(
                model, rt.still_overdue(msg.units, msg.periods, msg.due_at, counts), counts, now
            )
            if not rows:
                return None, ()
            kind = model.schedule.campaign.digest.attachment
            if msg.channel != "email" or kind == "none":
                return digest_context(model, person, rows, now), ()
            stamp = now.astimezone(model.schedule.campaign.tz).strftime("%Y%m%d")
            att = (
                Attachment(f"逾期名单{stamp}.xlsx", digest_xlsx(rows), XLSX_MIME)
                if kind == "xlsx"
                else Attachment(f"逾期名单{stamp}.csv", digest_csv(rows), "text/csv")
            )
            return digest_context(model, person, rows, now), (att,)
        unit = msg.units[0]
        occs = [o for k in msg.periods if (o := rt.occurrence(k)) is not None]
        if unit not in model.directory.units or not occs:
            return None, ()
        if msg.kind != "notice":
            occs = [
                o
                for o in occs
                if counts.get((unit, o.obligation, o.period), 0) < o.quota_min
                and model.owes(unit, o.obligation)
            ]
            if not occs:
                return None, ()
        return unit_context(model, person, msg.kind, unit, occs, counts, now), ()

    def _envelope(
        self, msg: Claimed, person: Person, ctx: dict[str, Any], attachments: tuple[Attachment, ...]
    ) -> Envelope:
        rendered = self.runtime.templates.render(msg.kind, msg.channel, ctx)
        address = (person.email if msg.channel == "email" else person.mobile) or msg.address
        return Envelope(
            key=msg.key,
            channel=msg.channel,  # type: ignore[arg-type]
            recipient_name=person.name,
            address=address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            attachments=attachments,
            sms_template=msg.kind if msg.channel == "sms" else None,
            sms_params=rendered.sms_params or {},
        )

    async def _send(self, msg: Claimed, envelope: Envelope, now: datetime) -> str:
        channel = self.channels.get(msg.channel)
        if channel is None:
            return await self._end(msg, now, "failed", f"no {msg.channel} channel is configured")
        started = time.perf_counter()
        try:
            found = None
            if msg.attempts > 0 and isinstance(channel, StatusQuery):
                found = await self._already_accepted(channel, envelope, msg)
            result = found or await channel.send(envelope)
        except DeliveryError as exc:
            ms = int((time.perf_counter() - started) * 1000)
            # Peers quote the recipient in their errors: masked before it is logged or stored.
            error = mask_text(
                f"{type(exc).__name__}: {exc}" + (f" [{exc.code}]" if exc.code else "")
            )
            log.warning(
                "send failed",
                key=msg.key,
                to=mask_address(envelope.address),
                permanent=exc.permanent,
                error=error,
            )
            if exc.permanent:
                return await self._end(
                    msg, now, "failed", error, outcome="permanent", duration_ms=ms
                )
            attempts = msg.attempts + 1
            if attempts >= self.policy.max_attempts:
                return await self._end(
                    msg,
                    now,
                    "failed",
                    f"gave up after {attempts} attempts; last error: {error}",
                    outcome="transient",
                    duration_ms=ms,
                )
            delay = self.policy.delay(attempts, self.rng, exc.retry_after)
            return self._record(
                msg,
                self.outbox.retry_later(
                    msg, self.worker, now, now + timedelta(seconds=delay), error, duration_ms=ms
                ),
                "retried",
            )
        ms = int((time.perf_counter() - started) * 1000)
        log.debug("sent", key=msg.key, channel=msg.channel, to=mask_address(envelope.address))
        return self._record(
            msg,
            self.outbox.finish(
                msg,
                self.worker,
                self.clock.now(),
                "sent",
                "",
                "sent",
                provider_id=result.provider_id,
                subject=envelope.subject,
                body=envelope.text,
                duration_ms=ms,
            ),
            "sent",
        )

    async def _already_accepted(
        self, channel: StatusQuery, envelope: Envelope, msg: Claimed
    ) -> SendResult | None:
        """An earlier attempt may have been accepted (timeout, crash): ask before resending.

        A transient query failure retries the whole message later; a permanent one (e.g.
        the account may send but not query) falls back to sending with the same out-id.
        """
        try:
            return await channel.find_accepted(envelope, msg.due_at - timedelta(days=1))
        except DeliveryError as exc:
            if not exc.permanent:
                raise
            log.warning(
                "status query refused; resending with the same out-id",
                key=msg.key,
                error=mask_text(str(exc))[:200],
            )
            return None

    async def _end(
        self,
        msg: Claimed,
        now: datetime,
        status: str,
        reason: str,
        outcome: str | None = None,
        duration_ms: int = 0,
    ) -> str:
        return self._record(
            msg,
            self.outbox.finish(
                msg,
                self.worker,
                now,
                status,
                reason,
                outcome or status,
                error=reason if status != "sent" else "",
                duration_ms=duration_ms,
            ),
            status,
        )
