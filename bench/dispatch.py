"""Figures 1, 2 and 4: dispatch through the whole service vs bare clients, firing lateness.

The peers run in their own processes (``bench.smtp_sink``, ``bench.http_gateway``). The
service side is ``open_app`` + ``Reconciler.run_cycle`` exactly as the daemon runs it:
plan → claim → re-check → render → send → record, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import httpx

from service.app import open_app
from service.channels.base import Envelope, message_id_for, out_id_for
from service.channels.email import message_bytes
from service.channels.http_lean import LeanTransport
from service.clock import RealClock, VirtualClock
from service.config import Settings
from service.messages import sample_contexts
from service.planner import PlannedMessage
from service.runtime import Runtime

from .common import Timer, local, percentile, pg_connect, wait_until

# One step only at this moment: the weekly-progress reminder (2023-W22) to every liaison.
BUSY_MOMENT = local("2023-06-01T09:00")
FROM_ADDR = "bench@example.org"
FROM_NAME = "报送提醒系统"
POOL_SIZE = 2  # the SMTP pool's default (service/channels/registry.py SmtpConfig)
SMS_CONCURRENCY = 8  # the dispatcher's default RetryPolicy.concurrency
WEBHOOK_BODY = (
    '{"to": {{ to|tojson }}, "template": {{ template|tojson }}, '
    '"params": {{ params|tojson }}, "out_id": {{ key|tojson }}}'
)


def write_channels(path: Path, smtp_port: int, http_port: int, pool_size: int) -> Path:
    path.write_text(
        "email:\n"
        "  backend: smtp\n"
        "  host: 127.0.0.1\n"
        f"  port: {smtp_port}\n"
        "  security: none\n"
        f"  from_addr: {FROM_ADDR}\n"
        f"  from_name: {FROM_NAME}\n"
        f"  pool_size: {pool_size}\n"
        "sms:\n"
        "  backend: webhook\n"
        f"  url: http://127.0.0.1:{http_port}/sms\n"
        "  allow_plaintext: true\n"
        f"  body_template: '{WEBHOOK_BODY}'\n",
        encoding="utf-8",
    )
    return path


async def reset_outbox(database: str) -> None:
    conn = await pg_connect(database)
    try:
        await conn.execute("TRUNCATE messages, delivery_attempts, planner_state, sms_quota CASCADE")
    finally:
        await conn.close()


@dataclass
class ServiceRun:
    sent: int
    other: int  # claimed but not sent (cancelled, failed, deferred, ...)
    seconds: float
    items: int = 0  # the sent bundles' items (reasons to write): several per message

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def item_rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


@dataclass
class Alternated:
    """Service cycles alternating with bare runs: bare, service, bare, service, …, bare.

    Each service run is compared with the bare runs on either side of it, so a drift of
    the machine (a shared VM's speed moves by ±10 % within minutes) moves both sides of
    that ratio; the figure reports the median round and every round's ratio.
    """

    bare: list[float]
    runs: list[ServiceRun]

    @property
    def ratios(self) -> list[float]:
        return [
            run.rate / ((self.bare[i] + self.bare[i + 1]) / 2) for i, run in enumerate(self.runs)
        ]

    @property
    def median(self) -> int:
        """The index of the median round (by ratio)."""
        order = sorted(range(len(self.runs)), key=lambda i: self.ratios[i])
        return order[len(order) // 2]

    @property
    def bare_mean(self) -> float:
        return sum(self.bare) / len(self.bare)


async def alternate(
    bare: Callable[[], Awaitable[float]],
    service: Callable[[], Awaitable[ServiceRun]],
    rounds: int,
) -> Alternated:
    result = Alternated([await bare()], [])
    for _ in range(rounds):
        result.runs.append(await service())
        result.bare.append(await bare())
    return result


async def sent_items(database: str) -> int:
    """Items carried by the sent messages (a bundle counts each of its items)."""
    conn = await pg_connect(database)
    try:
        value = await conn.fetchval(
            "SELECT coalesce(sum(CASE WHEN jsonb_typeof(items::jsonb) = 'array'"
            " THEN jsonb_array_length(items::jsonb) ELSE 1 END), 0)"
            " FROM messages WHERE status = 'sent'"
        )
    finally:
        await conn.close()
    return int(value)


async def service_cycle(settings: Settings, database: str, moment: datetime) -> ServiceRun:
    """One daemon cycle at ``moment`` on a virtual clock: everything due then is sent."""
    await reset_outbox(database)
    clock = VirtualClock(moment - timedelta(minutes=1))
    async with open_app(settings, clock, worker="bench") as app:
        await app.outbox.set_planned_through(clock.now(), clock.now())
        clock.set(moment)
        with Timer() as t:
            result = await app.reconciler.run_cycle("bench")
    stats = result.stats
    items = await sent_items(database)
    return ServiceRun(stats.sent, stats.claimed - stats.sent, t.seconds, items)


# Three weekly reminders (2023-W22 … W24, plus W24's consultation-day notice) that a
# recipient would get on three Thursdays, bundled as one e-mail due at BUSY_MOMENT: the
# per-item cost of a bundle (re-check, render, record) at the same message count.
BUNDLED_MOMENTS = tuple(BUSY_MOMENT + timedelta(days=7 * w) for w in range(3))


def merged_bundles(runtime: Runtime, channel: str) -> list[PlannedMessage]:
    """One bundle per recipient carrying the items of every BUNDLED_MOMENTS message."""
    by_person: dict[str, list[PlannedMessage]] = {}
    for moment in BUNDLED_MOMENTS:
        for m in runtime.planner.plan({}, moment - timedelta(minutes=1), moment).messages:
            if m.channel == channel:
                by_person.setdefault(m.recipient_id, []).append(m)
    out = []
    for group in by_person.values():
        first = group[0]
        obligations = {m.obligation for m in group}
        out.append(
            dataclasses.replace(
                first,
                obligation=first.obligation if len(obligations) == 1 else None,
                periods=tuple(sorted({p for m in group for p in m.periods})),
                expires_at=max(m.expires_at for m in group),
                items=[it for m in group for it in m.items],
            )
        )
    return out


async def bundle_cycle(settings: Settings, database: str) -> ServiceRun:
    """One daemon cycle at BUSY_MOMENT dispatching the merged e-mail bundles."""
    await reset_outbox(database)
    clock = VirtualClock(BUSY_MOMENT)
    async with open_app(settings, clock, worker="bench") as app:
        bundles = merged_bundles(app.runtime, "email")
        await app.outbox.insert(bundles, clock.now())
        await app.outbox.set_planned_through(clock.now(), clock.now())  # nothing else
        with Timer() as t:
            result = await app.reconciler.run_cycle("bench")
    stats = result.stats
    items = await sent_items(database)
    return ServiceRun(stats.sent, stats.claimed - stats.sent, t.seconds, items)


def sample_envelopes(runtime: Runtime, channel: str, n: int) -> list[Envelope]:
    """``n`` realistic envelopes, rendered once by the service's own templates."""
    ctx = dict(sample_contexts(runtime.model))["reminder"]
    rendered = runtime.templates.render("reminder", channel, ctx)
    liaisons = [p for p in runtime.model.directory.people if p.role == "liaison"]
    out = []
    for i in range(n):
        person = liaisons[i % len(liaisons)]
        key = f"bench/weekly-progress/2023-W22/{person.unit}/reminder1-1wd/{person.id}/{channel}"
        out.append(
            Envelope(
                key=key,
                channel=channel,  # type: ignore[arg-type]
                recipient_name=person.name,
                address=(person.email if channel == "email" else person.mobile) or "",
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                sms_template="reminder" if channel == "sms" else None,
                sms_params=rendered.sms_params or {},
            )
        )
    return out


def prerender_email(envelopes: Sequence[Envelope]) -> list[tuple[bytes, str]]:
    now = datetime.now(UTC)
    return [
        (
            message_bytes(
                e,
                from_addr=FROM_ADDR,
                from_name=FROM_NAME,
                message_id_domain="example.org",
                date=now,
            ),
            e.address,
        )
        for e in envelopes
    ]


async def bare_smtp(port: int, messages: Sequence[tuple[bytes, str]], connections: int) -> float:
    """Messages/s of plain aiosmtplib ``sendmail`` over ``connections`` reused sessions."""
    queue = iter(messages)

    async def worker() -> int:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
        await client.connect()
        sent = 0
        for raw, to in queue:  # the shared iterator hands each message to one worker
            await client.sendmail(FROM_ADDR, [to], raw)
            sent += 1
        await client.quit()
        return sent

    with Timer() as t:
        sent = sum(await asyncio.gather(*(worker() for _ in range(connections))))
    assert sent == len(messages)
    return sent / t.seconds


def prerender_sms(envelopes: Sequence[Envelope]) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for e in envelopes:
        body = json.dumps(
            {
                "to": e.address,
                "template": e.sms_template,
                "params": dict(e.sms_params),
                "out_id": e.key,
            },
            ensure_ascii=False,
            sort_keys=True,
        ).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "Idempotency-Key": out_id_for(e.key),
        }
        out.append((body, headers))
    return out


async def bare_http(
    url: str, requests: Sequence[tuple[bytes, dict[str, str]]], workers: int
) -> float:
    """Requests/s of plain httpx POSTs of pre-rendered JSON bodies, ``workers`` at a time."""
    queue = iter(requests)
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def worker() -> int:
            sent = 0
            for body, headers in queue:
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
                sent += 1
            return sent

        with Timer() as t:
            sent = sum(await asyncio.gather(*(worker() for _ in range(workers))))
    assert sent == len(requests)
    return sent / t.seconds


async def bare_lean(
    url: str, requests: Sequence[tuple[bytes, dict[str, str]]], workers: int
) -> float:
    """Requests/s of the same POSTs straight through the service's own HTTP transport
    (``LeanTransport``): the service's SMS path with nothing of the service around it."""
    queue = iter(requests)
    transport = LeanTransport(max_connections=10)
    target = httpx.URL(url)
    try:

        async def worker() -> int:
            sent = 0
            for body, headers in queue:
                request = httpx.Request("POST", target, headers=headers, content=body)
                response = await transport.handle_async_request(request)
                response.raise_for_status()
                sent += 1
            return sent

        with Timer() as t:
            sent = sum(await asyncio.gather(*(worker() for _ in range(workers))))
    finally:
        await transport.aclose()
    assert sent == len(requests)
    return sent / t.seconds


def read_sink(record: Path, offset: int = 0) -> dict[str, float]:
    """Message-ID → time the sink accepted it, for the lines written after ``offset``."""
    out: dict[str, float] = {}
    with record.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            at, _, mid = line.decode("ascii").rstrip("\n").partition(" ")
            out[mid] = float(at)
    return out


def sink_lines(record: Path) -> int:
    with record.open("rb") as fh:
        return sum(1 for _ in fh)


@dataclass
class Lateness:
    n: int
    sent: int
    p50: float
    p99: float
    worst: float
    ideal_p50: float
    ideal_p99: float
    rate: float  # the service's rate in this run: messages ÷ last acceptance


async def firing_lateness(
    settings: Settings, database: str, record: Path, n: int, bare_rate: float
) -> Lateness:
    """``n`` messages due at one wall-clock instant, one real-time cycle, lateness per message.

    The messages are the reminders the planner makes for 2023-06-01 09:00, re-timed to be
    due now (and to expire in a day) so that a RealClock cycle claims them all at once.
    """
    await reset_outbox(database)
    clock = RealClock()
    async with open_app(settings, clock, worker="bench-lateness") as app:
        runtime = app.runtime
        planned = runtime.planner.plan({}, BUSY_MOMENT - timedelta(minutes=1), BUSY_MOMENT)
        messages = [m for m in planned.messages if m.channel == "email"][:n]
        now = clock.now()
        later = now + timedelta(1)
        messages = [
            dataclasses.replace(
                m,
                due_at=now,
                next_attempt_at=now,
                expires_at=later,
                # each item of a bundle expires on its own too (re-checked at send time)
                items=[dict(it, expires=later.isoformat()) for it in m.items],
            )
            for m in messages
        ]
        await app.outbox.insert(messages, now)
        # The campaign (2023) is over in real time: nothing more is planned.
        await app.outbox.set_planned_through(runtime.timeline.end, now)
        wanted = [message_id_for(m.key, "example.org") for m in messages]
        offset = os.path.getsize(record)  # noqa: ASYNC240 (one stat, before timing)
        due = time.time()
        result = await app.reconciler.run_cycle("bench-lateness")
    accepted: dict[str, float] = {}

    def complete() -> bool:
        accepted.update(read_sink(record, offset))
        return all(mid in accepted for mid in wanted)

    await wait_until(complete, 30)
    late = [accepted[mid] - due for mid in wanted]
    return Lateness(
        n=len(messages),
        sent=result.stats.sent,
        p50=percentile(late, 50),
        p99=percentile(late, 99),
        worst=max(late),
        ideal_p50=len(messages) / 2 / bare_rate,
        ideal_p99=0.99 * len(messages) / bare_rate,
        rate=len(late) / max(late),
    )
