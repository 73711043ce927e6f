"""Validation warns about directory gaps that would make reminders go nowhere."""

from __future__ import annotations

from service.directory import Directory
from service.model import CampaignModel, build_model


def _without(model: CampaignModel, person_id: str) -> CampaignModel:
    d = model.directory
    people = [p for p in d.people if p.id != person_id]
    return build_model(model.schedule, Directory(units=d.units, people=people))


def test_shipped_campaign_has_no_warnings(model: CampaignModel) -> None:
    """The shipped directory gives every owing unit a liaison and a head."""
    assert model.warnings() == []


def test_unit_without_liaison_is_reported(model: CampaignModel) -> None:
    """A unit that owes obligations but has no liaison is named."""
    warnings = _without(model, "changchun-liaison").warnings()
    assert warnings == ["unit changchun owes obligations but has no liaison: nobody is reminded"]


def test_unit_without_head_is_reported(model: CampaignModel) -> None:
    """A unit whose ladder escalates to its head but has none is named."""
    warnings = _without(model, "dehui-head").warnings()
    assert warnings == ["unit dehui has no head: head escalations for it go nowhere"]
