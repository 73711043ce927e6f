"""The authorization matrix, generated from the app's route table.

Every route × every kind of caller (anonymous, liaison of A, liaison of B, head of A,
supervisor of region R, supervisor elsewhere, operator, admin, scoped and unscoped API
tokens) × every target (unit A / unit B where the route takes one) is requested for real
and compared with what the route's declared rule allows. A route without a rule makes
``create_app`` raise; a rule this test does not know fails it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI

from service.web.auth import route_rules
from service.web.state import WebState

from .conftest import PASSWORD, UNIT_A, UNIT_B, Users, csrf_of


@dataclass
class Caller:
    label: str
    role: str | None = None  # office-admin | office | supervisor | liaison | head
    units: set[str] | None = None  # visible units; None = all
    surface: str | None = None  # session | token
    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    csrf: str = ""


def expected(rule: str, caller: Caller, surface: str, target: str | None) -> bool:
    """What the rule means, written independently of service/web/auth.py."""
    if rule in ("public", "link"):
        return True
    if caller.surface != surface:
        return False
    office = caller.role in ("office-admin", "office")
    if rule == "admin":
        return caller.role == "office-admin"
    if rule == "office":
        return office
    if rule == "person":
        return caller.role in ("liaison", "head")
    if rule in ("unit", "scope"):
        if office:
            return True
        if caller.role != "supervisor":
            return False
        return target is None or target in (caller.units or set())
    raise AssertionError(f"rule {rule!r} is unknown to the matrix test: add its meaning here")


def refused(response: httpx.Response) -> bool:
    if response.status_code in (401, 403):
        return True
    return response.status_code == 303 and response.headers.get("location") == "/login"


async def _callers(app: FastAPI, users: Users, state: WebState) -> list[Caller]:
    transport = httpx.ASGITransport(app=app)
    subtree = state.model.directory.subtree
    out = [
        Caller("anonymous"),
        Caller("liaison of A", "liaison", {UNIT_A}, "session"),
        Caller("liaison of B", "liaison", {UNIT_B}, "session"),
        Caller("head of A", "head", {UNIT_A}, "session"),
        Caller("supervisor of R", "supervisor", set(subtree("changchun")), "session"),
        Caller("supervisor elsewhere", "supervisor", set(subtree("yanbian")), "session"),
        Caller("operator", "office", None, "session"),
        Caller("admin", "office-admin", None, "session"),
        Caller("scoped token", "supervisor", set(subtree("changchun")), "token"),
        Caller("unscoped token", "office", None, "token"),
    ]
    people = {
        "liaison of A": "changchun-liaison",
        "liaison of B": "jilin-city-liaison",
        "head of A": "changchun-head",
    }
    accounts = {
        "supervisor of R": "sup-r",
        "supervisor elsewhere": "sup-e",
        "operator": "operator",
        "admin": "admin",
    }
    tokens = {"scoped token": "scoped", "unscoped token": "unscoped"}
    now = state.clock.now()
    for c in out:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as hc:
            if c.label in people:
                pid = people[c.label]
                token = state.signer.issue(pid, await state.accounts.link_version(pid), now)
                assert (await hc.get(f"/l/{token}")).status_code == 303
            elif c.label in accounts:
                page = await hc.get("/login")
                r = await hc.post(
                    "/login",
                    data={
                        "name": accounts[c.label],
                        "password": PASSWORD,
                        "csrf": csrf_of(page.text),
                    },
                )
                assert r.status_code == 303
            page = await hc.get("/login")
            c.csrf = csrf_of(page.text)
            c.cookies = dict(hc.cookies)
        if c.label in tokens:
            c.headers = {"Authorization": f"Bearer {users.tokens[tokens[c.label]]}"}
    return out


@dataclass
class Case:
    method: str
    path: str
    rule: str
    target: str | None
    url: str


def _cases(app: FastAPI, link_token: str, message_id: int) -> Iterator[Case]:
    rules = route_rules(app)
    missing = [k for k, v in rules.items() if v is None]
    assert not missing, f"routes without a rule: {missing}"
    for (method, path), rule in sorted(rules.items()):
        assert rule is not None
        url = path.replace("{token}", link_token).replace("{message_id}", str(message_id))
        if path == "/static":
            url = "/static/console.css"
        if "{unit}" in path:
            for target in (UNIT_A, UNIT_B):
                yield Case(method, path, rule, target, url.replace("{unit}", target))
        elif rule in ("unit", "scope"):
            yield Case(method, path, rule, None, url)
            for target in (UNIT_A, UNIT_B):
                yield Case(method, path, rule, target, f"{url}?{rule}={target}")
        else:
            yield Case(method, path, rule, None, url)


def _body(case: Case, caller: Caller, n: int) -> dict[str, object]:
    """A well-formed request for each writing route (allowed callers pass validation or
    get a 4xx that is not a refusal)."""
    if case.path.startswith("/api/v1/submissions"):
        body: dict[str, object] = {
            "key": f"matrix-{n:06d}",
            "unit": UNIT_A,
            "obligation": "weekly-progress",
            "period": "2023-W26",
        }
        if case.path.endswith("retract"):
            body["reason"] = "matrix"
        return {"json": body}
    form = {"csrf": caller.csrf}
    if case.path == "/me/uploads":  # a macro workbook: refused by the reader, nothing written
        return {"data": form, "files": {"file": ("matrix.xlsm", b"PK\x03\x04")}}
    form.update(
        {
            "/me/submissions": {"obligation": "weekly-progress", "period": "2023-W26"},
            "/units/{unit}/submissions": {"occurrence": "weekly-progress@2023-W26"},
            "/units/{unit}/retract": {"submission_id": "999999", "reason": "matrix"},
            "/messages/requeue": {"key": "no-such-key"},
            "/admin/links/revoke": {"person": "siping-liaison"},
            "/admin/tokens/revoke": {"token_id": "999999"},
        }.get(case.path, {})
    )
    return {"data": form}


@pytest.mark.slow
async def test_authorization_matrix(
    app: FastAPI, users: Users, web_state: WebState, failed_message: tuple[int, str]
) -> None:
    """Every route × caller × target is allowed or refused exactly as its rule says."""
    callers = await _callers(app, users, web_state)
    link = web_state.signer.issue(
        "changchun-liaison",
        await web_state.accounts.link_version("changchun-liaison"),
        web_state.clock.now(),
    )
    transport = httpx.ASGITransport(app=app)
    wrong: list[str] = []
    cells = 0
    for n, (case, caller) in enumerate(
        (case, caller) for case in _cases(app, link, failed_message[0]) for caller in callers
    ):
        surface = "token" if case.path.startswith("/api/") else "session"
        want = expected(case.rule, caller, surface, case.target)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            cookies=caller.cookies,
            headers=caller.headers,
        ) as hc:
            kwargs = _body(case, caller, n) if case.method == "POST" else {}
            r = await hc.request(case.method, case.url, **kwargs)  # type: ignore[arg-type]
        cells += 1
        if r.status_code >= 500 or refused(r) == want:
            wrong.append(
                f"{case.method} {case.url} as {caller.label}: {r.status_code} "
                f"(rule {case.rule}: {'allowed' if want else 'refused'} expected)"
            )
    assert not wrong, "\n".join(wrong)
    print(f"authorization matrix: {cells} cells")  # the size goes into the report
    assert cells >= 300


async def test_tampered_link_refused_for_everyone(
    app: FastAPI, users: Users, web_state: WebState
) -> None:
    """The link routes refuse a tampered token whoever asks."""
    token = web_state.signer.issue("changchun-liaison", 1, web_state.clock.now())
    bad = re.sub(r".$", lambda m: "A" if m.group(0) != "A" else "B", token)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as hc:
        for url in (f"/l/{bad}", f"/feeds/unit/{bad}.ics"):
            assert (await hc.get(url)).status_code == 403


def test_route_without_rule_stops_the_app(app: FastAPI) -> None:
    """A new route declared without an access rule is reported by route_rules."""

    @app.get("/new-thing")
    async def new_thing() -> dict[str, str]:
        return {}

    assert route_rules(app)[("GET", "/new-thing")] is None
