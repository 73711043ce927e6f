"""JSON API on both backends: tokens, scope, CLI-shaped answers, idempotent writes."""

from __future__ import annotations

import httpx

from service import render
from service.model import CampaignModel
from service.status import compute_status, overdue_in_scope
from service.store.ledger import Ledger

from .conftest import Login, Users


def bearer(users: Users, which: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {users.tokens[which]}"}


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    """Without a token the API answers 401 with a Bearer challenge."""
    r = await client.get("/api/v1/status")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_unknown_token_is_401(client: httpx.AsyncClient, users: Users) -> None:
    """A token that is not ours is 401."""
    r = await client.get("/api/v1/status", headers={"Authorization": "Bearer crs_nope"})
    assert r.status_code == 401


async def test_session_does_not_open_the_api(login: Login) -> None:
    """A signed-in browser session is not an API credential (no CSRF-able writes)."""
    c = await login("operator")
    assert (await c.get("/api/v1/status")).status_code == 401


async def test_status_matches_cli_shape(
    client: httpx.AsyncClient, users: Users, model: CampaignModel, ledger: Ledger, web_clock
) -> None:  # type: ignore[no-untyped-def]
    """GET /api/v1/status?unit=U answers what `service status --unit U --json` prints."""
    now = web_clock.now()
    r = await client.get("/api/v1/status?unit=changchun", headers=bearer(users, "unscoped"))
    counts = await ledger.counts()
    expected = render.status_payload(model, compute_status(model, counts, now, ["changchun"]), now)
    assert r.status_code == 200 and r.json() == expected


async def test_overdue_matches_cli_shape_and_scope(
    client: httpx.AsyncClient, users: Users, model: CampaignModel, ledger: Ledger, web_clock
) -> None:  # type: ignore[no-untyped-def]
    """A scoped token's overdue defaults to its scope, like `service overdue --scope`."""
    now = web_clock.now()
    r = await client.get("/api/v1/overdue", headers=bearer(users, "scoped"))
    grouped = overdue_in_scope(model, await ledger.counts(), now, "changchun")
    assert r.json() == render.overdue_payload(model, grouped, now, "changchun")


async def test_scoped_token_outside_scope_is_403(client: httpx.AsyncClient, users: Users) -> None:
    """A token scoped to changchun may not read jilin-city."""
    r = await client.get("/api/v1/status?unit=jilin-city", headers=bearer(users, "scoped"))
    assert r.status_code == 403


async def test_record_is_idempotent(
    client: httpx.AsyncClient, users: Users, ledger: Ledger
) -> None:
    """The same key twice records once; the repeat replays the first answer."""
    body = {
        "key": "erp-0001-abc",
        "unit": "changchun",
        "obligation": "weekly-progress",
        "period": "2023-W26",
        "count": 1,
    }
    first = await client.post("/api/v1/submissions", json=body, headers=bearer(users, "unscoped"))
    again = await client.post("/api/v1/submissions", json=body, headers=bearer(users, "unscoped"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(await ledger.history("changchun")) == 1


async def test_key_reused_for_other_body_is_409(
    client: httpx.AsyncClient, users: Users, ledger: Ledger
) -> None:
    """A key already used for a different request is refused, nothing written."""
    body = {
        "key": "erp-0002-abc",
        "unit": "changchun",
        "obligation": "weekly-progress",
        "period": "2023-W26",
    }
    await client.post("/api/v1/submissions", json=body, headers=bearer(users, "unscoped"))
    other = {**body, "period": "2023-W25"}
    r = await client.post("/api/v1/submissions", json=other, headers=bearer(users, "unscoped"))
    assert r.status_code == 409
    assert [x.period for x in await ledger.history("changchun")] == ["2023-W26"]


async def test_invalid_fields_get_chinese_messages_and_write_nothing(
    client: httpx.AsyncClient, users: Users, ledger: Ledger
) -> None:
    """Each bad field is named with a Chinese message; the ledger stays empty."""
    body = {"key": "k", "unit": "changchun", "obligation": "weekly-progress", "count": 0}
    r = await client.post("/api/v1/submissions", json=body, headers=bearer(users, "unscoped"))
    assert r.status_code == 422
    errors = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert errors == {"key": "格式不正确", "period": "必填", "count": "不能小于 1"}
    assert await ledger.history() == []


async def test_domain_errors_name_the_field(
    client: httpx.AsyncClient, users: Users, ledger: Ledger
) -> None:
    """An unknown period is a 422 naming `period`; the key can be reused once corrected."""
    body = {
        "key": "erp-0003-abc",
        "unit": "changchun",
        "obligation": "weekly-progress",
        "period": "2023-W99",
    }
    r = await client.post("/api/v1/submissions", json=body, headers=bearer(users, "unscoped"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "period"
    assert await ledger.history() == []
    ok = await client.post(
        "/api/v1/submissions",
        json={**body, "period": "2023-W26"},
        headers=bearer(users, "unscoped"),
    )
    assert ok.status_code == 201


async def test_retract_is_idempotent(
    client: httpx.AsyncClient, users: Users, ledger: Ledger
) -> None:
    """Retracting twice with one key retracts once and answers the same both times."""
    h = bearer(users, "unscoped")
    base = {"unit": "changchun", "obligation": "weekly-progress", "period": "2023-W26"}
    await client.post("/api/v1/submissions", json={**base, "key": "rec-00001"}, headers=h)
    await client.post("/api/v1/submissions", json={**base, "key": "rec-00002"}, headers=h)
    body = {**base, "key": "ret-00001", "reason": "重复"}
    a = await client.post("/api/v1/submissions/retract", json=body, headers=h)
    b = await client.post("/api/v1/submissions/retract", json=body, headers=h)
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    assert [x.retracted_at is None for x in await ledger.history("changchun")].count(True) == 1


async def test_supervisor_token_cannot_write(client: httpx.AsyncClient, users: Users) -> None:
    """Writes belong to the office: a supervisor token is refused."""
    body = {
        "key": "erp-0004-abc",
        "unit": "changchun",
        "obligation": "weekly-progress",
        "period": "2023-W26",
    }
    r = await client.post("/api/v1/submissions", json=body, headers=bearer(users, "scoped"))
    assert r.status_code == 403


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    """The OpenAPI document lists the v1 endpoints and no pages."""
    doc = (await client.get("/api/v1/openapi.json")).json()
    assert set(doc["paths"]) == {
        "/api/v1/status",
        "/api/v1/overdue",
        "/api/v1/submissions",
        "/api/v1/submissions/retract",
    }
