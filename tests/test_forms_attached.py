"""Blank forms attached to reminder e-mails (issue 11 item 1: ``form.attach_to_reminders``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from openpyxl import load_workbook

from service.channels.base import Envelope
from service.compose import blank_forms
from service.errors import ConfigError
from service.runtime import Runtime
from service.schedule import parse_schedule

from .test_dispatcher import World, one
from .test_dispatcher import world as world  # the fixture

LIAISON, MAIL = "changchun-liaison", "changchun-liaison@example.org"
_OFF = "      attach_to_reminders: false\n"


def schedule_with(schedule_path: Path, tmp_path: Path, value: str) -> Path:
    """The shipped schedule with 附件2's ``attach_to_reminders`` set to ``value`` (YAML)."""
    text = schedule_path.read_text(encoding="utf-8")
    assert text.count(_OFF) == 1
    path = tmp_path / "schedule.yaml"
    path.write_text(text.replace(_OFF, f"      attach_to_reminders: {value}\n"), encoding="utf-8")
    return path


@pytest.fixture
def attaching(
    schedule_path: Path, contacts_dir: Path, templates_dir: Path, tmp_path: Path
) -> Runtime:
    """The shipped campaign with weekly-progress's form (附件2) attached to reminders."""
    return Runtime.load(schedule_with(schedule_path, tmp_path, "true"), contacts_dir, templates_dir)


def with_runtime(world: World, runtime: Runtime) -> World:
    return World(
        runtime,
        world.engine,
        world.clock,
        world.outbox,
        world.ledger,
        world.email,
        world.sms,
        world.policy,
    )


async def reminder_mail(world: World) -> Envelope:
    """The liaison's weekly-progress reminder e-mail of 2023-06-01 09:00, sent."""
    await world.at("2023-06-01T09:00")
    await world.insert(
        one(world, LIAISON, "email", "2023-06-01T08:59", "2023-06-01T09:00", "reminder1-1wd")
    )
    await world.dispatcher.run()
    [mail] = world.email.to(MAIL)
    return mail


async def test_reminder_attaches_the_prefilled_blank_form(world: World, attaching: Runtime) -> None:
    """With the option on, the reminder carries 附件2 as xlsx with the unit's name filled in."""
    mail = await reminder_mail(with_runtime(world, attaching))
    [att] = mail.attachments
    assert att.filename.startswith("附件2_weekly-progress_") and att.filename.endswith(".xlsx")
    assert "长春市安委会办公室" in att.filename
    rows = list(load_workbook(io.BytesIO(att.content)).active.iter_rows(values_only=True))
    header = next(i for i, r in enumerate(rows) if r[0] == "单位名称")
    assert rows[header + 1][0] == "长春市安委会办公室"


async def test_option_off_attaches_nothing(world: World) -> None:
    """The shipped schedule (option off) sends the reminder without attachments."""
    mail = await reminder_mail(world)
    assert mail.attachments == ()


def test_several_periods_attach_the_form_once(attaching: Runtime) -> None:
    """A bundle naming two weeks of weekly-progress for one unit attaches 附件2 once."""
    model = attaching.model
    weeks = [model.occurrence("weekly-progress", p) for p in ("2023-W22", "2023-W23")]
    entries = [("overdue", "changchun", weeks[0]), ("reminder", "changchun", weeks[1])]
    assert len(blank_forms(attaching, entries)) == 1  # type: ignore[arg-type]


def test_escalations_and_notices_attach_nothing(attaching: Runtime) -> None:
    """Only reminder and overdue items attach the form (a head's escalation does not)."""
    occ = attaching.model.occurrence("weekly-progress", "2023-W22")
    assert blank_forms(attaching, [("escalation", "changchun", occ)]) == ()  # type: ignore[list-item]


def test_bad_value_is_a_located_error(schedule_path: Path, tmp_path: Path) -> None:
    """A value other than true/false is refused naming the file, line and field."""
    path = schedule_with(schedule_path, tmp_path, "yes please")
    with pytest.raises(ConfigError) as info:
        parse_schedule(path)
    text = str(info.value)
    assert str(path) in text and "form.attach_to_reminders" in text
