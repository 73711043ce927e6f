"""Who may see what: principals from sessions, personal links and API tokens, and the rule
every route declares. ``create_app`` refuses to start if a route has no rule, and the
authorization matrix test is generated from the same table (``route_rules``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

from .security import token_hash
from .state import state_of

Role = Literal["office-admin", "office", "supervisor", "liaison", "head"]
Rule = Literal["public", "link", "admin", "office", "unit", "scope", "person"]
RULES: tuple[Rule, ...] = ("public", "link", "admin", "office", "unit", "scope", "person")
# Routes that are not FastAPI endpoints (no dependencies to carry a rule).
INFRA_RULES: dict[str, Rule] = {"/api/v1/openapi.json": "public", "/static": "public"}


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str  # user name, person id or token label
    scope: str | None  # supervisor: their unit; liaison/head: their own unit; office: None
    via: Literal["session", "link", "token"]

    @property
    def is_office(self) -> bool:
        return self.role in ("office-admin", "office")

    @property
    def actor(self) -> str:
        return f"{self.via}:{self.name}"


class LoginRequired(Exception):
    """A page asked for by nobody: the handler sends them to the login page."""


def visible_units(request: Request, who: Principal) -> set[str] | None:
    """Units ``who`` may see; None means every unit."""
    if who.is_office:
        return None
    if who.scope is None:
        return set()
    if who.role == "supervisor":
        return set(state_of(request).model.directory.subtree(who.scope))
    return {who.scope}


async def session_principal(request: Request) -> Principal | None:
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    state = state_of(request)
    session = request.session
    found: Principal | None = None
    if isinstance(name := session.get("u"), str):
        user = await state.accounts.user(name)
        if user is not None and not user.disabled:
            found = Principal(user.role, user.name, user.scope, "session")  # type: ignore[arg-type]
    elif isinstance(pid := session.get("p"), str):
        person = state.runtime.person(pid)
        if person is not None and session.get("v") == await state.accounts.link_version(pid):
            scope = person.scope if person.role == "supervisor" else person.unit
            found = Principal(person.role, person.id, scope, "link")
    request.state.principal = found
    return found


async def bearer_principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    row = None
    if scheme.lower() == "bearer" and token.strip():
        row = await state_of(request).accounts.token(token_hash(token.strip()))
    if row is None:
        raise HTTPException(401, "令牌无效或已撤销", headers={"WWW-Authenticate": "Bearer"})
    # labels need not be unique: the id keeps actors and idempotency keys apart
    return Principal(row.role, f"{row.label}#{row.id}", row.scope, "token")  # type: ignore[arg-type]


def allowed(rule: Rule, who: Principal | None, request: Request) -> bool:
    """The one place the rules are decided (pages and API alike)."""
    if rule in ("public", "link"):
        return True
    if who is None:
        return False
    if rule == "admin":
        return who.role == "office-admin"
    if rule == "office":
        return who.is_office
    if rule == "person":
        return who.role in ("liaison", "head")
    # unit / scope: office everywhere; supervisors inside their subtree (a missing
    # parameter means "my whole scope" and the handler narrows to it)
    if who.is_office:
        return True
    if who.role != "supervisor":
        return False
    target = request.path_params.get(rule) or request.query_params.get(rule)
    visible = visible_units(request, who) or set()
    return target is None or target == "" or target in visible


def _marked(rule: Rule, fn: Callable[..., Any]) -> Callable[..., Any]:
    fn.__rule__ = rule  # type: ignore[attr-defined]
    return fn


def page(rule: Rule) -> Callable[[Request], Awaitable[Principal]]:
    """A page dependency: the signed-in principal, if ``rule`` lets them in."""

    async def dependency(request: Request) -> Principal:
        who = await session_principal(request)
        if who is None:
            raise LoginRequired()
        if not allowed(rule, who, request):
            raise HTTPException(403, "您无权查看此页面。")
        return who

    return _marked(rule, dependency)


def open_page(rule: Literal["public", "link"]) -> Callable[[Request], Awaitable[Principal | None]]:
    async def dependency(request: Request) -> Principal | None:
        return await session_principal(request)

    return _marked(rule, dependency)


async def _public() -> None:
    return None


public = _marked("public", _public)  # endpoints anyone may call (health, metrics)


def caller(rule: Rule) -> Callable[[Request], Awaitable[Principal | None]]:
    """An API dependency: Bearer token → principal; 401 without, 403 outside the rule."""

    async def dependency(request: Request) -> Principal | None:
        who = await bearer_principal(request)
        if rule != "public" and who is None:
            raise HTTPException(401, "需要 Bearer 令牌", headers={"WWW-Authenticate": "Bearer"})
        if not allowed(rule, who, request):
            raise HTTPException(403, "超出权限范围")
        return who

    return _marked(rule, dependency)


def _rule_of(dependant: Any) -> Rule | None:
    for dep in dependant.dependencies:
        rule = getattr(dep.call, "__rule__", None)
        if rule is not None:
            return rule  # type: ignore[no-any-return]
        if (inner := _rule_of(dep)) is not None:
            return inner
    return None


def _walk(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes, with included routers opened (FastAPI ≥ 0.120 keeps them as one route
    holding ``original_router``; earlier versions copied their routes)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
        else:
            yield route


def route_rules(app: FastAPI) -> dict[tuple[str, str], Rule | None]:
    """(method, path) → declared rule for every route (None: a route without a rule)."""
    out: dict[tuple[str, str], Rule | None] = {}
    for route in _walk(app.routes):
        if isinstance(route, APIRoute):
            for method in sorted(route.methods or ()):
                out[(method, route.path)] = _rule_of(route.dependant)
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    out[(method, route.path)] = INFRA_RULES.get(route.path)
        elif isinstance(route, Mount):
            out[("GET", route.path)] = INFRA_RULES.get(route.path)
    return out
