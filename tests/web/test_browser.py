"""The console in a real browser: Playwright driving Debian's Chromium (never a
downloaded build). Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.cycle import Reconciler
from service.store.ledger import Ledger
from service.store.tables import messages
from service.web.server import start_server
from service.web.state import WebState
from tests.conftest import local

from .conftest import PASSWORD, Users, links_in_outbox

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)"
    ),
]
async_api = pytest.importorskip("playwright.async_api", reason="pip package playwright missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """The console served by uvicorn in this event loop on a free port."""
    port = free_port()
    async with start_server(app, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def browser_page(base_url: str) -> AsyncIterator[object]:
    """A fresh Chromium page (downloads accepted)."""
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(
            base_url=base_url,
            accept_downloads=True,
            locale="zh-CN",
            viewport={"width": 1280, "height": 900},
        )
        page = await context.new_page()
        try:
            yield page
        finally:
            await context.close()
            await browser.close()


def shot(name: str, request: pytest.FixtureRequest) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    backend = request.node.callspec.params.get("db_url", "db")
    return str(ARTIFACTS / f"{name}-{backend}.png")


async def sign_in(page, name: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto("/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit] >> text=登录")


async def test_operator_logs_in_and_records(
    browser_page, users: Users, ledger: Ledger, request: pytest.FixtureRequest
) -> None:  # type: ignore[no-untyped-def]
    """The operator signs in, opens a unit and records a submission through the form."""
    page = browser_page
    await sign_in(page, "operator")
    await page.wait_for_url("**/dashboard")
    await page.screenshot(path=shot("dashboard", request), full_page=True)
    await page.locator("tr", has_text="2023-W25").locator("a").nth(4).click()  # 逾期 number
    await page.wait_for_selector("h1:has-text('2023-W25')")
    assert (
        await page.locator("h1").inner_text()
        == "报送“安全生产月”活动进展情况统计表（2023-W25） · 逾期"
    )
    await page.goto("/units/changchun")
    await page.select_option("select[name=occurrence]", "weekly-progress@2023-W25")
    await page.fill("input[name=note]", "电话确认已报送")
    await page.click("button >> text=登记")
    await page.wait_for_selector("text=已登记报送。")
    await page.screenshot(path=shot("unit-page", request), full_page=True)
    [row] = await ledger.history("changchun")
    assert (row.period, row.recorded_by) == ("2023-W25", "session:operator")


async def test_liaison_link_marks_submitted_and_cycle_cancels_reminder(
    browser_page,
    app: FastAPI,
    web_state: WebState,
    web_clock: VirtualClock,
    reconciler: Reconciler,
    migrated_engine: AsyncEngine,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    """A liaison opens the link of an e-mail, presses 已报送; the next cycle cancels the reminder.

    Monday's cycle (06-26) e-mails the liaison what is owed, with their personal link. On
    Friday messages are bundles (one per recipient, channel and moment). W26's reminders to
    changchun's liaison by e-mail sit in two of them: 06-29's, caught up into the bundle at
    the 08:00 window opening with everything else owed, and the 09:00 one of its own.
    """
    await reconciler.run_cycle("test")  # Monday 06-26 10:00
    [link] = links_in_outbox(tmp_path / "outbox" / "email", "changchun-liaison@example.org")
    web_clock.set(local("2023-06-30T09:00"))
    await reconciler.plan()  # the 08:00 and 09:00 bundles are planned, not yet sent
    m = messages.c
    bundles = (
        sa.select(m.idem_key, m.status, m.reason, m["items"].label("bundled"))
        .where(
            m.recipient_id == "changchun-liaison",
            m.channel == "email",
            m.status != "stale",
        )
        .order_by(m.idem_key)
    )
    catch_up = "jilin-2023/2023-06-30T08:00/changchun-liaison/email"
    own = "jilin-2023/2023-06-30T09:00/changchun-liaison/email"

    def w26_steps(items: list[dict[str, str]]) -> list[tuple[str, str]]:
        return [
            (it["kind"], it["step"])
            for it in items
            if (it["obligation"], it["period"]) == ("weekly-progress", "2023-W26")
        ]

    async with migrated_engine.connect() as conn:
        before = {r.idem_key: r for r in await conn.execute(bundles)}
    assert {k: w26_steps(r.bundled) for k, r in before.items() if w26_steps(r.bundled)} == {
        catch_up: [("reminder", "reminder1-1wd")],
        own: [("reminder", "reminder2-0wd")],
    }
    assert before[catch_up].status == before[own].status == "pending"
    assert len(before[catch_up].bundled) > 1 and len(before[own].bundled) == 1

    page = browser_page
    await page.goto(urlsplit(link).path)  # the e-mail's host is SERVICE_PUBLIC_URL's
    await page.wait_for_url("**/me")
    await page.screenshot(path=shot("liaison-before", request), full_page=True)
    item = page.locator("section.item", has_text="2023-W26").filter(has_text="进展情况统计表")
    await item.locator("input[name=note]").fill("已通过邮件报送")
    await item.locator("button >> text=已报送").click()
    await page.wait_for_selector("#saved")
    await page.screenshot(path=shot("liaison-after", request), full_page=True)

    await reconciler.run_cycle("test")
    async with migrated_engine.connect() as conn:
        after = {r.idem_key: r for r in await conn.execute(bundles)}
    # the bundle with nothing else to say is cancelled, saying why
    assert (after[own].status, after[own].reason) == (
        "cancelled",
        "reason disappeared: submitted meanwhile",
    )
    # the catch-up bundle still has the rest to say (W25 went on Monday): sent, without W26
    assert after[catch_up].status == "sent"
    [sent] = [
        msg
        for msg in (
            BytesParser(policy=default).parsebytes(path.read_bytes())
            for path in (tmp_path / "outbox" / "email").glob("*.eml")
        )
        if msg["X-Campaign-Key"] == catch_up
    ]
    body = sent.get_body(("plain",)).get_content()
    assert "活动总结" in body and "（第26周）" not in body


async def test_supervisor_exports_overdue_list(
    browser_page, users: Users, request: pytest.FixtureRequest
) -> None:  # type: ignore[no-untyped-def]
    """A supervisor signs in, sees their overdue units and downloads the XLSX export."""
    from openpyxl import load_workbook

    page = browser_page
    await sign_in(page, "sup-r")
    await page.wait_for_url("**/overdue")
    await page.screenshot(path=shot("supervisor-overdue", request), full_page=True)
    async with page.expect_download() as info:
        await page.click("#export-xlsx")
    download = await info.value
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    rows = list(load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
    assert rows[0][:2] == ("事项", "单位") and any("农安县安委会办公室" in r for r in rows)
    assert download.suggested_filename == "overdue-changchun.xlsx"
