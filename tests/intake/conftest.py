"""Intake fixtures: a copy of the directory, an intake on SQLite, form and e-mail builders,
and a real Dovecot IMAP server (skipped, with the reason, where it is not installed)."""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clock import VirtualClock
from service.intake.core import Intake
from service.model import CampaignModel, load_model
from service.store.db import create_engine, migrate
from tests.conftest import ROOT, local
from tests.intake import dovecot as dc

LABELS_2 = [
    "单位名称",
    "宣传活动场次（场）",
    "参与人次（人次）",
    "发放宣传资料份数（份）",
    "悬挂横幅/张贴标语条数（条）",
    "应急演练次数（次）",
    "参演人次（人次）",
    "安全宣传咨询日活动场次（场）",
    "媒体报道篇数（篇）",
    "曝光典型案例数（个）",
    "排查整改隐患数（项）",
    "备注",
]
LABELS_1 = ["单位名称", "联络员姓名", "职务", "办公电话", "手机", "电子邮箱", "备注"]


@pytest.fixture
def contacts(tmp_path: Path) -> Path:
    """A writable copy of the shipped directory (review may rewrite people.csv)."""
    folder = tmp_path / "contacts"
    shutil.copytree(ROOT / "contacts", folder)
    return folder


@pytest.fixture
def office_model(contacts: Path) -> CampaignModel:
    """The shipped campaign over the writable directory copy."""
    return load_model(ROOT / "schedules" / "jilin-2023.yaml", contacts)


@pytest.fixture
def received_clock() -> VirtualClock:
    """Friday 2023-06-02 10:00: week 22's progress table is due today."""
    return VirtualClock(local("2023-06-02T10:00"))


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database in tmp (intake logic does not depend on the backend)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def intake(
    office_model: CampaignModel,
    sqlite_engine: AsyncEngine,
    received_clock: VirtualClock,
    tmp_path: Path,
) -> Intake:
    """Intake for the shipped campaign on SQLite, files kept under tmp/state."""
    return Intake(office_model, sqlite_engine, received_clock, tmp_path / "state", "test")


def workbook(sheets: dict[str, Sequence[Sequence[Any]]], merge_title: bool = True) -> bytes:
    """An xlsx as people make it: given rows per sheet (title rows merged across)."""
    wb = Workbook()
    first = True
    for title, rows in sheets.items():
        ws = wb.active if first else wb.create_sheet()
        assert ws is not None
        ws.title = title
        first = False
        for row in rows:
            ws.append(list(row))
        if merge_title and rows and len(rows[0]) == 1:
            ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=8)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def progress_form(unit_name: str, numbers: Sequence[Any], title: bool = True) -> bytes:
    """A filled 附件2 for one unit (title rows above the header, as the blank has)."""
    rows: list[Sequence[Any]] = []
    if title:
        rows += [["附件2"], ["全省“安全生产月”活动进展情况统计表"], [f"填报单位：{unit_name}"]]
    rows += [LABELS_2, [unit_name, *numbers]]
    return workbook({"Sheet1": rows})


def liaison_form(unit_name: str, name: str, mobile: str, email: str) -> bytes:
    """A filled 附件1 for one unit."""
    rows = [
        ["附件1"],
        ["全省“安全生产月”活动联络员反馈表"],
        LABELS_1,
        [unit_name, name, "科长", "0431-88880000", mobile, email, ""],
    ]
    return workbook({"附件1": rows})


def make_mail(
    sender: str,
    attachments: Sequence[tuple[str, bytes]] = (),
    subject: str = "周报",
    body: str = "请查收。",
    charset: str = "utf-8",
    html: bool = False,
    message_id: str | None = None,
    date: str = "2023-06-02T09:30",
) -> bytes:
    """An e-mail as a Chinese client writes it (charset, HTML-only, attachments)."""
    msg = EmailMessage()
    msg["From"] = f"联络员 <{sender}>"
    msg["To"] = "L18644975330@163.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(local(date))
    msg["Message-ID"] = message_id or make_msgid(domain="example.org")
    if html:
        msg.set_content(f"<html><body><p>{body}</p></body></html>", subtype="html", charset=charset)
    else:
        msg.set_content(body, charset=charset)
    for name, data in attachments:
        msg.add_attachment(
            data,
            maintype="application",
            subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            filename=name,
        )
    return msg.as_bytes()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[dc.Dovecot]:
    """A real Dovecot 2.3 on 127.0.0.1 with its config in a temp folder."""
    if not Path(dc.DOVECOT).exists():
        pytest.skip(f"{dc.DOVECOT} is missing: apt-get install dovecot-imapd")
    server, proc = dc.start()
    try:
        yield server
    finally:
        dc.stop(server, proc)


@pytest.fixture
def mailbox_env(dovecot: dc.Dovecot) -> dict[str, str]:
    """SERVICE_IMAP_* for a fresh mailbox user (each test has its own maildir)."""
    return {
        "SERVICE_IMAP_HOST": dovecot.host,
        "SERVICE_IMAP_PORT": str(dovecot.port),
        "SERVICE_IMAP_USER": f"office-{uuid.uuid4().hex[:8]}",
        "SERVICE_IMAP_PASSWORD": dc.PASSWORD,
        "SERVICE_IMAP_TLS": "0",
    }


Deliver = Callable[[bytes], None]


@pytest.fixture
def deliver(mailbox_env: dict[str, str]) -> Deliver:
    """Put a message into the test mailbox's INBOX with IMAP APPEND (how mail arrives)."""
    import imaplib

    def put(raw: bytes) -> None:
        conn = imaplib.IMAP4(
            mailbox_env["SERVICE_IMAP_HOST"], int(mailbox_env["SERVICE_IMAP_PORT"])
        )
        try:
            conn.login(mailbox_env["SERVICE_IMAP_USER"], mailbox_env["SERVICE_IMAP_PASSWORD"])
            typ, data = conn.append("INBOX", None, None, raw)
            assert typ == "OK", data
        finally:
            conn.logout()

    return put
