"""Ledger.import_rows on both backends: classification inside one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.model import CampaignModel
from service.store.ledger import Ledger
from service.submissions import ImportReader

CSV = (
    "unit,obligation,period,count,at\n"
    "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
    "hunchun,weekly-progress,2023-W25,1,2023-06-20T11:00\n"
    "yanji,weekly-progress,2023-W25,1,2023-06-20T10:00\n"
)


async def test_import_is_idempotent_on_each_backend(
    ledger: Ledger, model: CampaignModel, tmp_path: Path
) -> None:
    """First import: 2 new + 1 repeat; second: 3 already recorded; counts unchanged."""
    path = tmp_path / "s.csv"
    path.write_text(CSV, encoding="utf-8")
    first = await ledger.import_rows(ImportReader(path, model), "t")
    second = await ledger.import_rows(ImportReader(path, model), "t")
    assert (first.new, first.already, first.conflicting) == (2, 1, 0)
    assert (second.new, second.already, second.conflicting) == (0, 3, 0)
    assert await ledger.count_of("yanji", "weekly-progress", "2023-W25") == 1


async def test_a_bad_row_after_good_chunks_rolls_back_everything(
    ledger: Ledger, model: CampaignModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows already inserted in earlier chunks are rolled back when a later row is bad."""
    import service.store.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "_IMPORT_CHUNK", 1)
    path = tmp_path / "s.csv"
    path.write_text(CSV + "atlantis,weekly-progress,2023-W25,1,\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        await ledger.import_rows(ImportReader(path, model), "t")
    assert [p.line for p in err.value.problems] == [5]
    assert await ledger.counts() == {}
    assert await ledger.audit_trail() == []
