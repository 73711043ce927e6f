"""What ``validate`` checks beyond the inputs' own schemas: everything that would otherwise
fail permanently at send time (issue 8.7).

- The channels file: parsed by the registry (its rules, e.g. no plaintext credentials),
  every channel built once (a secret it names must be set), and the sender's From field
  built by the e-mail writer itself.
- Every person's SMS: the registered template's variables, as the dispatcher would render
  them for that person, against the sms.yaml limit and the provider account's limit, and
  the provider's own parameter rules (``sms_common.ordered_params``).

Rendering each person's SMS would cost 300,000 renders on a national directory, so each
kind is rendered twice with stand-in names; when the output only ever contains the name
verbatim (the usual ``{{ recipient.name }}``), each person's values are that output with
the real names put in. Templates that transform the name fall back to real renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .channels.base import DeliveryError, Envelope
from .channels.email import message_bytes
from .channels.registry import (
    ChannelsConfig,
    FileConfig,
    SignedSmsConfig,
    build_channels,
    load_channels_config,
)
from .channels.sms_common import AliyunSettings, SmsTemplate, TencentSettings, ordered_params
from .directory import Person, locate_people
from .errors import ConfigError, Problem
from .messages import sample_contexts
from .model import CampaignModel
from .sandbox import cpu_clock
from .sources import line_of, load_yaml
from .templates import Templates, sms_length

PEOPLE_CHECK_RENDERS = 10  # CPU budget of the per-person check, in render time limits
MAX_PERSON_PROBLEMS = 50  # then one line with the count: a bad column would list them all
_NAME = ("\ue000", "\ue001\ue001\ue001")  # stand-ins (private use): never in real names
_UNIT = ("\ue002", "\ue003\ue003\ue003\ue003\ue003")
# Who receives each kind (steps.py: escalations to the liaison are "overdue"; to the
# head "escalation"; supervisors get theirs through the digest).
RECIPIENT_ROLE = {
    "reminder": "liaison",
    "notice": "liaison",
    "overdue": "liaison",
    "escalation": "head",
    "digest": "supervisor",
}


@dataclass(frozen=True)
class SmsLimits:
    """The provider's view of one SMS kind: its registered template and default limit."""

    template: SmsTemplate | None
    default_max: int


async def check_channels(path: Path | None, state_dir: Path, signature: str) -> list[Problem]:
    """The channels file as the daemon would use it; [] when none is configured."""
    if path is None:
        return []
    cfg = load_channels_config(path)  # ConfigError: located problems of the registry's rules
    doc = load_yaml(path)
    problems: list[Problem] = []
    for part in ("email", "sms"):
        # One channel at a time, so that a missing e-mail secret does not hide the SMS one.
        alone = cfg.model_copy(update={"email" if part == "sms" else "sms": FileConfig()})
        try:
            channels = build_channels(alone, state_dir, signature)
        except (DeliveryError, ValueError) as exc:
            problems.append(Problem(str(path), line_of(doc, [part]), part, str(exc)))
            continue
        for channel in {id(c): c for c in channels.values()}.values():
            await channel.aclose()
    from_name, from_addr, where = _sender(cfg)
    try:
        message_bytes(
            Envelope(
                key="validate",
                channel="email",
                recipient_name="",
                address=from_addr,
                subject="",
                text="",
            ),
            from_addr=from_addr,
            from_name=from_name,
            message_id_domain=from_addr.rpartition("@")[2] or "invalid",
            date=datetime(2000, 1, 1, tzinfo=UTC),
        )
    except DeliveryError as exc:
        problems.append(
            Problem(
                str(path), line_of(doc, [*where, "from_name"]), ".".join(where) or "from", str(exc)
            )
        )
    return problems


def _sender(cfg: ChannelsConfig) -> tuple[str, str, list[str]]:
    if isinstance(cfg.email, FileConfig):
        return cfg.from_name, cfg.from_addr, []
    return cfg.email.from_name, cfg.email.from_addr, ["email"]


def sms_limits(cfg: ChannelsConfig | None) -> dict[str, SmsLimits]:
    """Per SMS kind, the provider template and limit (empty for the file and webhook)."""
    if cfg is None or not isinstance(cfg.sms, SignedSmsConfig):
        return {}
    sms = cfg.sms
    default = sms.max_param_len or (
        AliyunSettings.default_max_param_len
        if sms.backend == "aliyun"
        else TencentSettings.default_max_param_len
    )
    out = {}
    for kind, ref in sms.templates.items():
        out[kind] = SmsLimits(SmsTemplate(ref.code, tuple(ref.params), ref.max_param_len), default)
    return out


def uses_sms(model: CampaignModel) -> bool:
    camp = model.schedule.campaign
    steps: list[Any] = [
        s for ob in model.schedule.obligations for s in [*ob.reminders, *ob.escalation]
    ]
    return (
        "sms" in camp.channels
        or "sms" in camp.digest.channels
        or any(s.channels and "sms" in s.channels for s in steps)
    )


def check_people_sms(
    model: CampaignModel,
    templates: Templates,
    contacts: Path,
    provider: Mapping[str, SmsLimits],
    channels_file: Path | None = None,
) -> list[Problem]:
    """Every person with a mobile, against every SMS kind they can receive."""
    if not uses_sms(model):
        return []
    failures: dict[str, str] = {}  # person id -> first problem
    problems: list[Problem] = []
    # Real renders per person (a template that transforms names) stay within this much CPU.
    deadline = cpu_clock() + PEOPLE_CHECK_RENDERS * templates.limits.seconds
    units = model.directory.units
    for kind, ctx in sample_contexts(model):
        if kind not in templates.sms.templates or (
            kind == "digest" and "sms" not in model.schedule.campaign.digest.channels
        ):
            continue
        if provider and kind not in provider:
            problems.append(
                Problem(
                    str(channels_file),
                    None,
                    f"sms.templates.{kind}",
                    "no provider template for this kind: its SMS would all fail",
                )
            )
            continue
        role = RECIPIENT_ROLE[kind]
        people = [p for p in model.directory.people if p.mobile and p.role == role]
        limits = provider.get(kind)
        try:
            for person, params in _params_per_person(templates, kind, ctx, people, units, deadline):
                if person.id not in failures and (
                    msg := _sms_problem(templates, kind, params, limits)
                ):
                    failures[person.id] = f"SMS {kind}: {msg}"
        except Exception as exc:  # a render refused for some name, or the time ran out
            problems.append(
                Problem(
                    str(templates.folder / "sms.yaml"),
                    None,
                    f"templates.{kind}.params",
                    f"not every person checked: {type(exc).__name__}: {exc}",
                )
            )
    if not failures:
        return problems
    path, lines = locate_people(contacts, failures.keys())
    problems += [
        Problem(str(path), lines.get(pid), "name", f"person {pid}: {msg}")
        for pid, msg in list(failures.items())[:MAX_PERSON_PROBLEMS]
    ]
    if len(failures) > MAX_PERSON_PROBLEMS:
        problems.append(
            Problem(
                str(path),
                None,
                "name",
                f"and {len(failures) - MAX_PERSON_PROBLEMS} more people like these",
            )
        )
    return problems


def _params_per_person(
    templates: Templates,
    kind: str,
    ctx: dict[str, Any],
    people: Iterable[Person],
    units: Mapping[str, Any],
    deadline: float,
) -> Iterator[tuple[Person, dict[str, str]]]:
    def render(name: str, unit_name: str) -> dict[str, str]:
        trial = {**ctx, "recipient": {**ctx["recipient"], "name": name}}
        if "unit" in ctx:
            trial["unit"] = {**ctx["unit"], "name": unit_name}
        return templates.render(kind, "sms", trial, deadline).sms_params or {}

    first, second = render(_NAME[0], _UNIT[0]), render(_NAME[1], _UNIT[1])
    plain = {k: v.replace(_NAME[0], "\0n").replace(_UNIT[0], "\0u") for k, v in first.items()}
    verbatim = plain == {
        k: v.replace(_NAME[1], "\0n").replace(_UNIT[1], "\0u") for k, v in second.items()
    }
    for person in people:
        unit_name = units[person.unit].name if person.unit in units else ""
        if verbatim:
            yield (
                person,
                {
                    k: v.replace("\0n", person.name).replace("\0u", unit_name)
                    for k, v in plain.items()
                },
            )
        else:
            yield person, render(person.name, unit_name)


def _sms_problem(
    templates: Templates, kind: str, params: dict[str, str], limits: SmsLimits | None
) -> str | None:
    ours = templates.sms.max_param_length
    for name, value in params.items():
        limit = ours
        if limits is not None and limits.template is not None:
            limit = min(ours, limits.template.limit_for(name, limits.default_max))
        if len(value) > limit:
            return f"variable {name} is {len(value)} characters ({value!r}); the limit is {limit}"
    text = templates.sms.templates[kind].text
    for name, value in params.items():
        text = text.replace("${" + name + "}", value)
    if (n := sms_length(text, templates.sms.signature)) > 70:
        return f"{n} characters with the signature: more than one SMS (70)"
    if limits is not None and limits.template is not None:
        try:
            ordered_params(limits.template, params, limits.default_max)
        except DeliveryError as exc:
            return str(exc)
    return None


async def check_send_time(
    model: CampaignModel,
    templates: Templates,
    contacts: Path,
    channels_file: Path | None,
    state_dir: Path,
) -> None:
    """Raise ConfigError with every problem that would make messages fail when sent."""
    problems = await check_channels(channels_file, state_dir, templates.sms.signature)
    cfg = None
    if channels_file is not None and not problems:
        cfg = load_channels_config(channels_file)
    problems += check_people_sms(model, templates, contacts, sms_limits(cfg), channels_file)
    if problems:
        raise ConfigError(problems)
