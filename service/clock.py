"""Injected time: every component asks a Clock, never the standard library."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of aware UTC time that can also wait until a moment."""

    def now(self) -> datetime: ...

    async def sleep_until(self, moment: datetime) -> None: ...


def ensure_aware(moment: datetime) -> datetime:
    """Refuse naive datetimes: a naive time is a bug waiting for a container's TZ."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} (a time zone is required)")
    return moment.astimezone(UTC)


class RealClock:
    """Wall-clock time; sleeps re-check ``now()`` because of clock jumps and suspend."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        moment = ensure_aware(moment)
        # Re-check the wall clock after each nap: it may jump (NTP, suspend).
        while (delay := (moment - self.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(delay, 60.0))


class VirtualClock:
    """A clock that jumps: ``sleep_until`` returns at once with time moved forward."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_aware(start)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        moment = ensure_aware(moment)
        if moment < self._now:
            raise ValueError("a virtual clock never goes backwards")
        self._now = moment

    async def sleep_until(self, moment: datetime) -> None:
        moment = ensure_aware(moment)
        if moment > self._now:
            self._now = moment
        await asyncio.sleep(0)
