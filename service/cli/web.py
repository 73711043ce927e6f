"""Console commands: serve, user add, link, token create."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..store.accounts import ROLES, TOKEN_ROLES, AccountError, Accounts
from ..store.db import create_engine, migrate
from .commands import app
from .common import Context, fail, run_async

user_app = typer.Typer(help="Console accounts (office and supervisors).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


async def _with_accounts(state: Context, fn):  # type: ignore[no-untyped-def]
    engine = create_engine(state.settings.db_url)
    try:
        await migrate(engine)
        return await fn(Accounts(engine, state.clock))
    finally:
        await engine.dispose()


def _check_scope(state: Context, scope: str | None) -> None:
    if scope is not None and scope not in state.model().directory.units:
        fail(f"--scope: unknown unit {scope!r}")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
    at: Annotated[
        str | None,
        typer.Option(help="Show the campaign as at this moment (a frozen clock, for demos)."),
    ] = None,
) -> None:
    """Run the web console and API (several processes may share PostgreSQL)."""
    from ..logs import configure
    from ..web.server import serve as run_server
    from ..web.state import MissingSecret, WebSettings

    configure(log_level)
    try:
        WebSettings.from_env()
    except MissingSecret as exc:
        fail(str(exc))

    async def go(state: Context) -> None:
        from ..clock import Clock, VirtualClock

        clock: Clock = state.clock
        if at is not None:
            clock = VirtualClock(state.at(at, state.model()))
        typer.echo(f"控制台：http://{host}:{port}/", err=True)
        await run_server(state.settings, clock, host, port)

    run_async(ctx, go)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="office-admin | office | supervisor")],
    scope: Annotated[str | None, typer.Option(help="Supervisors: a unit id.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a console user; the password is read from stdin and stored as an argon2 hash."""
    from ..web.security import hash_password

    if not password_stdin:
        fail("--password-stdin: give the password on standard input (never as an argument)")
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 10:
        fail("password: at least 10 characters")
    if role not in ROLES:
        fail(f"--role: must be one of {', '.join(ROLES)}")

    async def go(state: Context) -> None:
        _check_scope(state, scope)
        try:
            await _with_accounts(
                state, lambda acc: acc.add_user(name, role, scope, hash_password(password))
            )
        except AccountError as exc:
            fail(str(exc))
        typer.echo(f"已添加用户 {name}（{role}{'，范围 ' + scope if scope else ''}）")

    run_async(ctx, go)


@app.command()
def link(
    ctx: typer.Context,
    person: Annotated[str, typer.Argument(help="A person id from the directory.")],
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Invalidate every earlier link of this person first.")
    ] = False,
) -> None:
    """Print a person's personal link (liaison, head or supervisor); no password needed."""
    from ..links import link_url, signer_from_env

    signer = signer_from_env()
    if signer is None:
        fail("SERVICE_LINK_SECRET is not set (a random string of at least 16 characters)")
        return

    async def go(state: Context) -> None:
        found = next((p for p in state.model().directory.people if p.id == person), None)
        if found is None:
            fail(f"PERSON: unknown person {person!r}")
            return

        async def version(acc: Accounts) -> int:
            return await acc.revoke_links(person) if revoke else await acc.link_version(person)

        token = signer.issue(person, await _with_accounts(state, version), state.clock.now())
        typer.echo(f"{found.name}（{found.id}）的个人链接，{signer.ttl.days} 天内有效：", err=True)
        typer.echo(link_url(token))

    run_async(ctx, go)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="office | supervisor")],
    scope: Annotated[str | None, typer.Option(help="A unit id: only its subtree.")] = None,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "api",
) -> None:
    """Create an API token (printed once, on the last line; only its hash is stored)."""
    from ..web.security import new_api_token, token_hash

    if role not in TOKEN_ROLES:
        fail(f"--role: must be one of {', '.join(TOKEN_ROLES)}")
    token = new_api_token()

    async def go(state: Context) -> None:
        _check_scope(state, scope)
        try:
            tid = await _with_accounts(
                state, lambda acc: acc.add_token(token_hash(token), label, role, scope)
            )
        except AccountError as exc:
            fail(str(exc))
        typer.echo(
            f"令牌 {tid}（{role}{'，范围 ' + scope if scope else ''}）已创建，只显示这一次："
        )
        typer.echo(token)

    run_async(ctx, go)
