"""The dispatcher: claim due messages, re-check their reason, render, send, record.

Every claimed message ends in exactly one transition: ``sent``, ``cancelled`` (its reason
disappeared), ``stale`` (it stopped making sense), ``failed`` (permanent error or
retries exhausted), or back to ``pending`` for a retry with backoff or a quiet-hours wait.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
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
from .compose import compose
from .directory import Person
from .errors import ConfigError
from .links import REDACTED, PersonLinks
from .runtime import Runtime
from .status import Counts
from .steps import window_open
from .store.ledger import Ledger
from .store.outbox import Claimed, Outbox

log = structlog.get_logger("service.dispatcher")


@dataclass(frozen=True)
class RetryPolicy:
    # None: a transient failure is retried for as long as the message makes sense (until
    # it expires), never more than ``max_delay`` apart; a number bounds the attempts too.
    max_attempts: int | None = None
    base_delay: float = 60.0  # seconds; doubles per attempt
    max_delay: float = 3600.0
    # A channel failing for this long without a single success is logged as an error.
    alarm_after: timedelta = timedelta(minutes=15)
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


# Young-generation collections while dispatching. Every message allocates thousands of
# short-lived containers (template contexts, dicts, futures); at Python's default of 700
# a busy cycle spent 0.024-0.033 ms per message collecting, at 20,000 0.002-0.007 (bench
# figure 1's harness, 9,982 e-mails; ~5 % of the dispatcher's CPU). Restored after a run.
_DISPATCH_GC = (20_000, 20, 20)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*_DISPATCH_GC)
    try:
        yield
    finally:
        gc.set_threshold(*before)


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
class _Batch:
    """A claimed batch with what its re-check reads: ledger counts and link versions."""

    batch: list[Claimed]
    now: datetime
    counts: Counts
    link_versions: dict[str, int]


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
    # Personal links in e-mails (None: no SERVICE_LINK_SECRET, the e-mails say to call).
    links: PersonLinks | None = None
    # channel -> (first failure since its last success, whether the alarm was logged)
    _failing: dict[str, tuple[datetime, bool]] = field(default_factory=dict)
    # Per run: each message's queued transition (task, intended outcome, key).
    _records: list[tuple[asyncio.Future[bool], str, str]] = field(default_factory=list)
    _recorded_ids: set[int] = field(default_factory=set)  # per batch
    _unrecorded: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    _broken: list[BaseException] = field(default_factory=list)
    _link_versions: dict[str, int] = field(default_factory=dict)  # per batch

    async def run(self) -> Stats:
        """Claim and process batches until nothing is due (or a stop was requested).

        Results are recorded in the background (group commits) while the next messages
        and batches are sent; the run waits for all of them before it returns. The next
        batch is claimed (and its ledger counts read) while the last quarter of the
        current one is still being sent, so the senders do not stand idle in between.
        """
        total = Stats()
        self._records = []
        self._broken = []
        self._unrecorded = asyncio.Semaphore(self.policy.unrecorded)
        with _fewer_collections():
            return await self._run(total)

    async def _run(self, total: Stats) -> Stats:
        try:
            prepared = await self._prepare()
            while prepared is not None:
                if self.stopping.is_set() or self._broken:
                    if not self._broken:  # a stop: hand back what never started
                        await self.outbox.release(prepared.batch, self.worker, self.clock.now())
                    break
                total.claimed += len(prepared.batch)
                prepared = await self._process_batch(prepared)
                self._count_done(total)  # a national run's records are not all kept
        finally:
            await self._settle(total)
        if self._broken:
            raise self._broken[0]
        return total

    async def _prepare(self) -> _Batch | None:
        """Claim the next batch and read what its re-check needs (None: nothing is due)."""
        now = self.clock.now()
        batch = await self.outbox.claim(self.worker, now, self.policy.batch, self.policy.lease)
        if not batch:
            return None
        units = sorted({u for m in batch for u in m.units})
        counts = await self.ledger.counts_for(units, as_of=now)
        versions: dict[str, int] = {}
        if self.links is not None:  # one query per batch, read fresh: revocations count
            versions = await self.links.versions.link_versions(
                {m.recipient_id for m in batch if m.channel == "email" and m.kind != "notice"}
            )
        return _Batch(batch, now, counts, versions)

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

    async def _process_batch(self, prepared: _Batch) -> _Batch | None:
        """Send one batch; returns the next one, claimed once this one's last message started."""
        batch, now, counts = prepared.batch, prepared.now, prepared.counts
        self._link_versions = prepared.link_versions
        sem = asyncio.Semaphore(self.policy.concurrency)
        broken = self._broken
        pending = list(batch)
        self._recorded_ids = set()
        following: list[asyncio.Task[_Batch | None]] = []
        # The next claim (and its counts) takes about as long as preparing and sending a
        # quarter of a batch: started when that much is left, the senders never wait for
        # it (started at the last message, the loop idled ~12 % of a busy cycle).
        prefetch_at = self.policy.batch // 4

        async def one(msg: Claimed) -> None:
            async with sem:
                if self.stopping.is_set() or broken:
                    return
                pending.remove(msg)
                if len(pending) <= prefetch_at and not following:
                    following.append(asyncio.ensure_future(self._prepare()))
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
        if not following:
            return None
        try:
            return await following[0]
        except Exception as exc:  # the store failed while claiming: as a failed record
            broken.append(exc)
            return None

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
            if verdict := await self._window(msg, now):
                return verdict
            previous = None
            if msg.kind == "digest":
                previous = await self.outbox.last_sent_items(
                    msg.recipient_id, msg.channel, "digest", now
                )
            kind, ctx, attachments, dropped = compose(rt, msg, person, counts, now, previous)
            if ctx is None:
                return await self._end(msg, now, "cancelled", f"reason disappeared: {dropped}")
            # Preparing a message is ~0.4 ms of CPU in one piece; the replies of the
            # sessions already sending queue behind it. Two yields cut it in three, so a
            # reply waits for a third of it (bench figure 1: +5 % with two SMTP sessions).
            await asyncio.sleep(0)
            link = self._link(msg, kind, person, now)
            if link is not None:
                ctx["link"] = link
            envelope = self._envelope(msg, kind, person, ctx, attachments)
        except Exception as exc:  # a template or data bug must not leave the message claimed
            log.exception("message preparation failed", key=msg.key)
            return await self._end(
                msg, now, "failed", f"internal error: {type(exc).__name__}: {exc}"
            )
        await asyncio.sleep(0)
        if msg.channel != "sms":
            return await self._send(msg, envelope, now, link["url"] if link else "")
        return await self._send_capped(msg, kind, envelope, now)

    def _link(
        self, msg: Claimed, kind: str, person: Person, now: datetime
    ) -> dict[str, Any] | None:
        """The recipient's personal link, signed with their current version and ``now``."""
        links = self.links
        if links is None or not links.wanted(kind, msg.channel, person.role):
            return None
        version = self._link_versions.get(person.id)
        if version is None:  # not in the batch's read (cannot happen for e-mails): no link
            return None
        return links.context(person.id, version, now)

    async def _send_capped(self, msg: Claimed, kind: str, envelope: Envelope, now: datetime) -> str:
        """The daily SMS cap, per phone number, shared by every replica (a reservation row).

        Urgent beats early: a reminder or notice SMS may not take the last slot of the day
        (it is cancelled; the e-mail carries it), so an overdue notice or an escalation
        always finds one; if even that is gone it is deferred to the next day's window,
        never dropped while it still makes sense.
        """
        camp = self.runtime.model.schedule.campaign
        cap = camp.sms_daily_cap
        urgent = kind in ("overdue", "escalation")
        limit = cap if urgent or cap < 2 else cap - 1
        day = now.astimezone(camp.tz).date()
        # A message whose worker stopped mid-send took its slot then (reserve comes before
        # send) and may even have been delivered: resending it (same out-id, the accepted
        # crash window) must not take a second slot, or a delivered SMS could be recorded
        # as cancelled by the cap.
        reserved = not msg.in_doubt
        if reserved and not await self.outbox.reserve_sms(envelope.address, day.isoformat(), limit):
            if urgent:
                tomorrow = datetime.combine(day + timedelta(days=1), dtime(0), tzinfo=camp.tz)
                opens = self._open(tomorrow, "sms")
                if opens is not None and (msg.expires_at is None or opens <= msg.expires_at):
                    return self._record(
                        msg,
                        self.outbox.retry_later(
                            msg,
                            self.worker,
                            now,
                            opens,
                            f"daily SMS cap reached ({cap} per number): deferred",
                            count_attempt=False,
                            outcome="deferred",
                        ),
                        "deferred",
                    )
            why = "kept for urgent messages" if limit < cap else f"{cap} per number"
            return await self._end(
                msg,
                now,
                "cancelled",
                f"daily SMS cap reached ({why}); the email copy carries the message",
            )
        outcome = await self._send(msg, envelope, now)
        if outcome != "sent" and reserved:
            await self.outbox.release_sms(envelope.address, day.isoformat())
        return outcome

    def _open(self, moment: datetime, channel: str) -> datetime | None:
        camp = self.runtime.model.schedule.campaign
        try:
            return window_open(moment, camp.window(channel), self.runtime.model.calendar, camp.tz)
        except (ConfigError, ValueError):
            return None

    async def _window(self, msg: Claimed, now: datetime) -> str | None:
        """Outside the channel's sending window a message waits for it (no attempt counted)."""
        opens = self._open(now, msg.channel)
        if opens is not None and opens <= now:
            return None
        if opens is None or (msg.expires_at is not None and opens > msg.expires_at):
            return await self._end(msg, now, "stale", "no sending window before it expired")
        return self._record(
            msg,
            self.outbox.retry_later(
                msg,
                self.worker,
                now,
                opens,
                "waiting for the sending window",
                count_attempt=False,
                outcome="deferred",
            ),
            "deferred",
        )

    def _envelope(
        self,
        msg: Claimed,
        kind: str,
        person: Person,
        ctx: dict[str, Any],
        attachments: tuple[Attachment, ...],
    ) -> Envelope:
        rendered = self.runtime.templates.render(kind, msg.channel, ctx)
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
            sms_template=kind if msg.channel == "sms" else None,
            sms_params=rendered.sms_params or {},
        )

    async def _send(self, msg: Claimed, envelope: Envelope, now: datetime, secret: str = "") -> str:
        """Send and record; ``secret`` (a personal link) is kept out of the stored body."""
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
            self._channel_failed(msg.channel, now, error)
            attempts = msg.attempts + 1
            limit = self.policy.max_attempts
            if limit is not None and attempts >= limit:
                return await self._end(
                    msg,
                    now,
                    "failed",
                    f"gave up after {attempts} attempts; last error: {error}",
                    outcome="transient",
                    duration_ms=ms,
                )
            delay = self.policy.delay(attempts, self.rng, exc.retry_after)
            if msg.expires_at is not None and now + timedelta(seconds=delay) > msg.expires_at:
                return await self._end(
                    msg,
                    now,
                    "failed",
                    f"gave up after {attempts} attempts: it stops making sense at "
                    f"{msg.expires_at.astimezone(self.runtime.model.schedule.campaign.tz).isoformat()}"
                    f"; last error: {error}",
                    outcome="transient",
                    duration_ms=ms,
                )
            return self._record(
                msg,
                self.outbox.retry_later(
                    msg, self.worker, now, now + timedelta(seconds=delay), error, duration_ms=ms
                ),
                "retried",
            )
        ms = int((time.perf_counter() - started) * 1000)
        if self._failing.pop(msg.channel, None) is not None:
            log.info("channel recovered", channel=msg.channel)
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
                body=envelope.text.replace(secret, REDACTED) if secret else envelope.text,
                duration_ms=ms,
            ),
            "sent",
        )

    def _channel_failed(self, channel: str, now: datetime, error: str) -> None:
        """Log loudly (once per outage) when a channel fails for longer than the threshold."""
        since, alarmed = self._failing.get(channel, (now, False))
        if not alarmed and now - since >= self.policy.alarm_after:
            log.error(
                "channel failing",
                channel=channel,
                since=since.isoformat(),
                minutes=int((now - since).total_seconds() // 60),
                last_error=error[:200],
            )
            alarmed = True
        self._failing[channel] = (since, alarmed)

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
