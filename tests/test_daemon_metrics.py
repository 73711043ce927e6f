"""Issue 10 item 6: `service run --metrics HOST:PORT` exposes the daemon's own metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.app import open_app
from service.clock import VirtualClock
from service.config import Settings
from service.daemon import Daemon
from service.metrics import DaemonMetrics

from .conftest import ROOT, local


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_cycle_is_counted_timed_and_its_sends_tallied(tmp_path: Path) -> None:
    """One daemon cycle at 09:00 on 06-19: cycles{ok}=1, one duration sample, sent > 0,
    last good cycle = the daemon's clock."""
    settings = Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )
    clock = VirtualClock(local("2023-06-19T09:00"))
    metrics = DaemonMetrics()
    async with open_app(settings, clock, durable_outbox=False) as app:
        await Daemon(app, metrics=metrics).cycle("tick")
    with metrics.served("127.0.0.1", 0) as port:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    got = samples(text)
    assert got[("service_cycles_total", (("result", "ok"),))] == 1
    assert got[("service_cycles_total", (("result", "failed"),))] == 0
    assert got[("service_cycle_duration_seconds_count", ())] == 1
    assert got[("service_dispatched_messages_total", (("outcome", "sent"),))] > 0
    assert got[("service_last_good_cycle_timestamp_seconds", ())] == clock.now().timestamp()


def test_metrics_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    """`run --metrics` on a port already taken: exit 1, one Chinese line naming --metrics."""
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli_app,
            [
                *("--schedule", str(ROOT / "schedules" / "jilin-2023.yaml")),
                *("--contacts", str(ROOT / "contacts"), "--templates", str(ROOT / "templates")),
                *("--state-dir", str(tmp_path / "state"), "run"),
                *("--metrics", f"127.0.0.1:{port}"),
            ],
        )
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("错误") and "--metrics" in line


def test_metrics_needs_host_and_port(tmp_path: Path) -> None:
    """`run --metrics 9100`: refused, naming the expected HOST:PORT form."""
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    result = CliRunner().invoke(
        cli_app, ["--state-dir", str(tmp_path / "state"), "run", "--metrics", "9100"]
    )
    assert result.exit_code == 1 and "HOST:PORT" in result.output
