"""Office pages about the campaign: preview, directory with warnings, calendar."""

from __future__ import annotations

from .conftest import Login


async def test_preview_lists_next_messages_with_reasons(login: Login) -> None:
    """At 06-26 10:00 the preview shows the next moment's messages and why."""
    c = await login("operator")
    r = await c.get("/preview")
    assert r.status_code == 200 and "下一批：2023-06-2" in r.text
    assert "尚未报送" in r.text or "逾期" in r.text


async def test_calendar_shows_holiday_shift(login: Login) -> None:
    """2023-W25 is due 06-21, shifted from Friday 06-23 (Dragon Boat Festival)."""
    c = await login("operator")
    r = await c.get("/calendar")
    assert "2023-06-21 17:00" in r.text and "原定 2023-06-23" in r.text


async def test_directory_lists_units_and_warnings(login: Login) -> None:
    """The directory page lists units with their people and the model's warnings section."""
    c = await login("operator")
    r = await c.get("/directory")
    assert "农安县安委会办公室" in r.text and "李海燕（联络员）" in r.text
    assert "通讯录检查无问题" in r.text or "检查提示" in r.text
