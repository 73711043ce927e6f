"""The outbox, seen by the operator: preview (what goes out next), messages, show."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import render
from ..model import CampaignModel
from ..store.queries import (
    MESSAGE_STATES,
    MessageFilter,
    final_keys,
    message_detail,
    message_rows,
    obligations_of,
)
from .commands import app
from .common import Context, fail, print_table, run_async, say, with_engine, with_ledger
from .i18n import CHANNEL, KIND, help_text, local_times, reason, t, word
from .i18n import state as state_word


def unit_names(model: CampaignModel, units: list[str] | tuple[str, ...], most: int = 3) -> str:
    names = [model.directory.units[u].name if u in model.directory.units else u for u in units]
    shown = "、".join(names[:most])
    return shown + (t("and_more", n=len(names) - most) if len(names) > most else "")


def person_name(model: CampaignModel, person_id: str) -> str:
    for person in model.directory.people:
        if person.id == person_id:
            return person.name
    return person_id


def waiting(row: dict[str, Any], model: CampaignModel) -> str:
    """What a pending message waits for: an SMS waits for its sending window."""
    if row["status"] != "pending":
        return ""
    when = render.iso_local(row["next_attempt_at"], model)
    if row["channel"] == "sms" and row["next_attempt_at"] > row["due_at"]:
        return t("waits_sms_window", at=when)
    return t("waits_until", at=when)


@app.command(help=help_text("cmd.preview"))
def preview(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help=help_text("opt.at"))] = None,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    from ..runtime import Runtime

    async def go(state: Context) -> None:
        s = state.settings
        runtime = Runtime.load(s.schedule, s.contacts, s.templates)
        model = runtime.model
        moment = state.at(at, model)
        counts = await with_ledger(
            state, model, lambda led: led.count_table(model.unit_index(), as_of=moment)
        )
        nxt = runtime.timeline.next_moment(moment)
        if nxt is None:
            say(t("campaign_over"))
            return
        plan = runtime.planner.plan(counts, moment, nxt)
        done = await with_engine(state, lambda e: final_keys(e, [m.key for m in plan.messages]))
        rows: list[dict[str, Any]] = [
            {
                "at": render.iso_local(m.next_attempt_at, model),
                "kind": m.kind,
                "channel": m.channel,
                "recipient": m.recipient_id,
                "recipient_name": (p.name if (p := runtime.person(m.recipient_id)) else ""),
                "obligation": m.obligation,
                "periods": list(m.periods),
                "units": list(m.units),
                "status": m.status,
                "key": m.key,
                "why": reason(m.reason, model.schedule.campaign.tz) or _why(m.kind, m.step),
                "waiting_for": (
                    t("waits_sms_window", at=render.iso_local(m.next_attempt_at, model))
                    if m.channel == "sms" and m.next_attempt_at > m.due_at
                    else ""
                ),
            }
            for m in plan.messages
            if m.key not in done
        ]
        if json:
            say(
                render.dump_json(
                    {
                        "campaign": model.key,
                        "next": render.iso_local(nxt, model),
                        "already_final": len(done),
                        "messages": rows,
                    }
                )
            )
            return
        say(t("preview_head", at=render.iso_local(nxt, model), n=len(rows), final=len(done)))
        print_table(
            "",
            t("preview_cols").split("|"),
            [
                [
                    r["at"],
                    word(KIND, r["kind"]),
                    word(CHANNEL, r["channel"]),
                    r["recipient_name"] or r["recipient"],
                    unit_names(model, r["units"]),
                    ", ".join(r["periods"][:3]),
                    "；".join(x for x in (r["why"], r["waiting_for"]) if x),
                ]
                for r in rows
            ],
        )

    run_async(ctx, go)


def _why(kind: str, step: str) -> str:
    return t(f"why.{kind}", step=step) if f"why.{kind}" in _WHY_KEYS else step


_WHY_KEYS = {"why.reminder", "why.overdue", "why.escalation", "why.digest", "why.notice"}


@app.command(help=help_text("cmd.messages"))
def messages(
    ctx: typer.Context,
    status_: Annotated[str | None, typer.Option("--status", help="|".join(MESSAGE_STATES))] = None,
    unit: Annotated[str | None, typer.Option(help=help_text("opt.unit"))] = None,
    person: Annotated[str | None, typer.Option(help=help_text("opt.person"))] = None,
    obligation: Annotated[str | None, typer.Option(help=help_text("opt.obligation"))] = None,
    since: Annotated[str | None, typer.Option(help=help_text("opt.since"))] = None,
    until: Annotated[str | None, typer.Option(help=help_text("opt.until"))] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help=help_text("opt.limit"))] = 50,
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    if status_ is not None and status_ not in MESSAGE_STATES:
        fail(f"--status: {status_!r}: {t('one_of', values=', '.join(MESSAGE_STATES))}")

    async def go(state: Context) -> None:
        from ..store.outbox import Outbox

        model = state.model()
        where = MessageFilter(
            unit=state.unit(unit, model) if unit is not None else None,
            person=_person(model, person) if person is not None else None,
            obligation=_obligation(model, obligation) if obligation is not None else None,
            status=status_,
            since=state.at(since, model, "--since") if since else None,
            until=state.at(until, model, "--until") if until else None,
        )
        if where.since and where.until and where.since >= where.until:
            fail(t("since_until"))

        async def read(engine: AsyncEngine) -> tuple[list[dict[str, Any]], dict[str, int]]:
            rows = await message_rows(engine, model.key, where, limit)
            return rows, await Outbox(engine, model.key).status_counts()

        rows, counts = await with_engine(state, read)
        tz = model.schedule.campaign.tz

        def local(moment: datetime | None) -> str | None:
            return render.iso_local(moment, model) if moment else None

        items = [
            {
                "key": r["idem_key"],
                "status": r["status"],
                # Programs get the stable English reason, people a translated one; both +08:00.
                "reason": local_times(r["reason"], tz) if json else reason(r["reason"], tz),
                "waiting_for": waiting(r, model),
                "attempts": r["attempts"],
                "kind": r["kind"],
                "channel": r["channel"],
                "recipient": r["recipient_id"],
                "obligations": obligations_of(r),
                "units": list(r["units"] or ()),
                "due": local(r["due_at"]),
                "next_attempt": local(r["next_attempt_at"]),
                "sent_at": local(r["sent_at"]),
            }
            for r in rows
        ]
        if json:
            say(render.dump_json({"counts": counts, "messages": items}))
            return
        say(t("by_state", counts=_counts(counts)))
        print_table(
            "",
            t("messages_cols").split("|"),
            [
                [
                    state_word(i["status"]),
                    i["due"] or "",
                    word(KIND, i["kind"]),
                    word(CHANNEL, i["channel"]),
                    person_name(model, i["recipient"]),
                    i["key"],
                    i["reason"] or i["waiting_for"],
                ]
                for i in items
            ],
        )

    run_async(ctx, go)


def _counts(counts: dict[str, int]) -> str:
    from .i18n import counts_line

    return counts_line(counts)


def _person(model: CampaignModel, text: str) -> str:
    for person in model.directory.people:
        if text in (person.id, person.name):
            return person.id
    fail(f"--person: {t('unknown_person', value=repr(text))}")


def _obligation(model: CampaignModel, text: str) -> str:
    keys = [o.key for o in model.schedule.obligations]
    if text not in keys:
        fail(f"--obligation: {text!r}: {t('one_of', values=', '.join(keys))}")
    return text


@app.command(help=help_text("cmd.show"))
def show(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help=help_text("arg.key"))],
    json: Annotated[bool, typer.Option("--json", help=help_text("opt.json"))] = False,
) -> None:
    async def go(state: Context) -> None:
        model = state.model()
        found = await with_engine(state, lambda e: message_detail(e, model.key, key))
        if found is None:
            fail(t("no_message", key=repr(key)))
        row, attempts = found
        tz = model.schedule.campaign.tz

        def local(moment: datetime | None) -> str:
            return render.iso_local(moment, model) if moment else ""

        if json:
            say(
                render.dump_json(
                    {
                        "key": row["idem_key"],
                        "status": row["status"],
                        "reason": row["reason"],
                        "kind": row["kind"],
                        "step": row["step"],
                        "channel": row["channel"],
                        "recipient": row["recipient_id"],
                        "address": row["address"],
                        "units": row["units"],
                        "periods": row["periods"],
                        "due": local(row["due_at"]),
                        "sent_at": local(row["sent_at"]) or None,
                        "subject": row["subject"],
                        "body": row["body"],
                        "attempts": [
                            {
                                "at": local(a["at"]),
                                "outcome": a["outcome"],
                                "error": a["error"],
                                "provider_id": a["provider_id"],
                                "duration_ms": a["duration_ms"],
                            }
                            for a in attempts
                        ],
                    }
                )
            )
            return
        fields = [
            (t("f.key"), row["idem_key"]),
            (t("f.state"), state_word(row["status"])),
            (t("f.reason"), reason(row["reason"], tz) or waiting(row, model)),
            (t("f.kind"), f"{word(KIND, row['kind'])}（{row['step']}）"),
            (t("f.channel"), word(CHANNEL, row["channel"])),
            (t("f.recipient"), f"{person_name(model, row['recipient_id'])}（{row['address']}）"),
            (t("f.units"), unit_names(model, row["units"] or [], most=10)),
            (t("f.periods"), ", ".join(row["periods"] or [])),
            (t("f.due"), local(row["due_at"])),
            (t("f.sent_at"), local(row["sent_at"])),
        ]
        print_table("", [t("f.field"), t("f.value")], [[k, str(v or "")] for k, v in fields])
        if row["subject"] or row["body"]:
            say(f"\n{t('f.subject')}: {row['subject'] or ''}\n\n{row['body'] or ''}")
        else:
            say(t("not_rendered"))
        print_table(
            t("attempts_title", n=len(attempts)),
            t("attempts_cols").split("|"),
            [
                [
                    local(a["at"]),
                    a["outcome"],
                    reason(a["error"], tz),
                    a["provider_id"] or "",
                    str(a["duration_ms"]),
                ]
                for a in attempts
            ],
        )

    run_async(ctx, go)
