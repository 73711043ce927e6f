"""The daemon's own Prometheus metrics (``service run --metrics HOST:PORT``).

The console's ``/metrics`` reads the store (messages by state and channel, pending, planner
lag): numbers every replica shares. These are what only the running process knows: how
long its cycles take, how many failed, when the last good one ended, and what its
dispatcher did with the messages it claimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Cycles run from a few milliseconds (nothing due) to minutes (a national catch-up).
_CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class DaemonMetrics:
    """Metrics of one daemon process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.cycle_seconds = Histogram(
            "service_cycle_duration_seconds",
            "Duration of one reconciliation cycle (plan and dispatch)",
            buckets=_CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.cycles = Counter(
            "service_cycles",
            "Reconciliation cycles by result (ok, failed)",
            ["result"],
            registry=self.registry,
        )
        self.last_good = Gauge(
            "service_last_good_cycle_timestamp_seconds",
            "When the last cycle that did not fail ended (Unix time, the daemon's clock)",
            registry=self.registry,
        )
        self.dispatched = Counter(
            "service_dispatched_messages",
            "Messages this process's dispatcher handled, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.cycles.labels("ok")
        self.cycles.labels("failed")

    def cycle_ok(self, seconds: float, ended: datetime, stats: Any) -> None:
        """One cycle that completed; ``stats`` is the dispatcher's Stats dataclass."""
        self.cycle_seconds.observe(seconds)
        self.cycles.labels("ok").inc()
        self.last_good.set(ended.timestamp())
        for outcome, n in asdict(stats).items():
            if n:
                self.dispatched.labels(outcome).inc(n)

    def cycle_failed(self, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycles.labels("failed").inc()

    @contextmanager
    def served(self, host: str, port: int) -> Iterator[int]:
        """Serve ``/metrics`` on HOST:PORT (a thread) while inside; yields the bound port."""
        server, thread = start_http_server(port, host, registry=self.registry)
        try:
            yield int(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


__all__ = ["DaemonMetrics"]
