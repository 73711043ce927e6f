"""The console's SQL shortcuts agree with the domain's own functions (both backends)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from service.model import CampaignModel
from service.status import compute_status, open_occurrences
from service.store.ledger import Ledger
from service.submissions import load_submissions_csv
from service.web.state import WebState
from service.web.views import status_rows

ROOT = Path(__file__).resolve().parent.parent.parent


async def _seed(ledger: Ledger, model: CampaignModel) -> None:
    subs = load_submissions_csv(ROOT / "examples" / "submissions-2023.csv", model)
    await ledger.record(subs, "import")
    await ledger.retract("changchun", "weekly-progress", "2023-W21", "test", "重复")


async def test_sql_tallies_match_status_rows(
    web_state: WebState, ledger: Ledger, model: CampaignModel
) -> None:
    """Done and done-on-time per occurrence: one SQL aggregate == compute_status + timeliness."""
    await _seed(ledger, model)
    now = web_state.clock.now()
    occs = open_occurrences(model, now)
    expected: Counter[tuple[str, str, str]] = Counter()
    for st, key in await status_rows(web_state, None, now):
        if key in ("done", "late"):
            expected[(st.occurrence.obligation, st.occurrence.period, key)] += 1
    sums = await web_state.queries.occurrence_tallies(
        [(o.obligation, o.period, o.due_at, o.quota_min) for o in occs], now
    )
    got: Counter[tuple[str, str, str]] = Counter()
    for (ob, per), (done, on_time) in sums.items():
        got[(ob, per, "done")] += on_time
        got[(ob, per, "late")] += done - on_time
    assert +got == +expected and sum(expected.values()) > 100


async def test_submissions_per_day_matches_rows(
    web_state: WebState, ledger: Ledger, model: CampaignModel
) -> None:
    """Per local day counts from SQL equal counting the dated rows in Python."""
    await _seed(ledger, model)
    now = web_state.clock.now()
    tz = model.schedule.campaign.tz
    rows = await web_state.queries.dated_counts()
    expected = Counter(r[4].astimezone(tz).date() for r in rows if r[4] <= now)
    assert await web_state.queries.submissions_per_day(now, tz) == dict(expected)


def test_single_unit_status_equals_filtered_status(model: CampaignModel) -> None:
    """compute_status for one unit (its fast path) equals filtering the full answer."""
    from tests.conftest import local

    at = local("2023-06-26T10:00")
    counts = {("changchun", "weekly-progress", "2023-W25"): 1}
    full = [s for s in compute_status(model, counts, at) if s.unit == "changchun"]
    assert compute_status(model, counts, at, ["changchun"]) == full and full
