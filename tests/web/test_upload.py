"""Upload on the liaison page: a filled form goes through intake_file for the link's unit
(source upload); refused files write nothing. Both backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.store.ledger import Ledger
from service.store.tables import intake_evidence, intake_review
from tests.intake.conftest import progress_form

from .conftest import UNIT_A, UNIT_B, csrf_of

Enter = Callable[[str], Awaitable[httpx.AsyncClient]]
NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]
FORM_A = progress_form("长春市安委会办公室", NUMBERS)
FORM_B = progress_form("吉林市安委会办公室", NUMBERS)


async def _upload(
    c: httpx.AsyncClient, filename: str, data: bytes, **fields: str
) -> httpx.Response:
    """Post the upload form as the page offers it (W26 item), follow the redirect."""
    page = await c.get("/me")
    form = {"csrf": csrf_of(page.text), "obligation": "weekly-progress", "period": "2023-W26"}
    r = await c.post("/me/uploads", data={**form, **fields}, files={"file": (filename, data)})
    assert r.status_code == 303 and r.headers["location"].startswith("/me"), r.text
    return await c.get(r.headers["location"])


async def _evidence_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        ev = (await conn.execute(sa.select(sa.func.count()).select_from(intake_evidence))).scalar()
        rv = (await conn.execute(sa.select(sa.func.count()).select_from(intake_review))).scalar()
    return int(ev or 0) + int(rv or 0)


async def test_upload_records_for_the_links_unit(link_client: Enter, ledger: Ledger) -> None:
    """A filled 附件2 uploaded by A's liaison is recorded for A with source upload."""
    c = await link_client("changchun-liaison")
    page = await _upload(c, "附件2-长春市.xlsx", FORM_A)
    assert 'id="upload-recorded"' in page.text and "已登记" in page.text
    [row] = await ledger.history(UNIT_A)
    assert (row.obligation, row.period, row.source, row.recorded_by) == (
        "weekly-progress",
        "2023-W26",
        "upload",
        "link:changchun-liaison",
    )


async def test_same_file_again_records_nothing_new(link_client: Enter, ledger: Ledger) -> None:
    """Uploading the same file twice says already recorded and keeps one submission."""
    c = await link_client("changchun-liaison")
    await _upload(c, "附件2.xlsx", FORM_A)
    page = await _upload(c, "附件2.xlsx", FORM_A)
    assert 'id="upload-duplicate"' in page.text and "已登记过" in page.text
    assert len(await ledger.history(UNIT_A)) == 1


async def test_macro_workbook_is_refused_and_nothing_written(
    link_client: Enter, ledger: Ledger, migrated_engine: AsyncEngine, settings: Settings
) -> None:
    """A .xlsm gets the reader's Chinese error; no submission, evidence or kept file."""
    c = await link_client("changchun-liaison")
    page = await _upload(c, "附件2.xlsm", FORM_A)
    assert 'id="upload-refused"' in page.text and "带宏的工作簿" in page.text
    assert await ledger.history(UNIT_A) == []
    assert await _evidence_rows(migrated_engine) == 0
    assert not (Path(settings.state_dir) / "intake").exists()


async def test_garbage_file_is_refused_with_a_located_error(
    link_client: Enter, ledger: Ledger, migrated_engine: AsyncEngine
) -> None:
    """Bytes that are no spreadsheet get a Chinese error naming the file; nothing written."""
    c = await link_client("changchun-liaison")
    page = await _upload(c, "周报.xlsx", b"PK\x03\x04 this is not a workbook")
    assert 'id="upload-refused"' in page.text and "周报.xlsx" in page.text
    assert await ledger.history(UNIT_A) == []
    assert await _evidence_rows(migrated_engine) == 0


async def test_unit_field_in_the_form_is_ignored(link_client: Enter, ledger: Ledger) -> None:
    """A unit posted with the form does not move the submission off the link's unit."""
    c = await link_client("changchun-liaison")
    await _upload(c, "附件2.xlsx", FORM_A, unit=UNIT_B)
    assert await ledger.history(UNIT_B) == []
    assert len(await ledger.history(UNIT_A)) == 1


async def test_liaison_of_a_cannot_upload_for_b(link_client: Enter, ledger: Ledger) -> None:
    """B's filled form uploaded by A's liaison records nothing for B (the office reviews it)."""
    c = await link_client("changchun-liaison")
    page = await _upload(c, "附件2-吉林市.xlsx", FORM_B)
    assert 'id="upload-review"' in page.text
    assert await ledger.history(UNIT_B) == [] and await ledger.history(UNIT_A) == []


async def test_missing_csrf_is_refused(link_client: Enter, ledger: Ledger) -> None:
    """An upload without the page's CSRF token is refused and records nothing."""
    c = await link_client("changchun-liaison")
    r = await c.post("/me/uploads", data={}, files={"file": ("附件2.xlsx", FORM_A)})
    assert r.status_code == 403
    assert await ledger.history(UNIT_A) == []


async def test_oversized_upload_is_refused_before_reading(
    link_client: Enter, ledger: Ledger
) -> None:
    """A request larger than the intake's file limit is answered 413 without parsing it."""
    from service.intake.read import MAX_FILE_BYTES

    c = await link_client("changchun-liaison")
    big = b"0" * (MAX_FILE_BYTES + 128 * 1024)
    r = await c.post("/me/uploads", files={"file": ("big.csv", big)})
    assert r.status_code == 413 and "MB" in r.text
    assert await ledger.history(UNIT_A) == []
