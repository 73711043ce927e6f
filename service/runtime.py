"""The reloadable part of a running service: campaign model, timeline, planner, templates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .directory import Person
from .forms import BlankForms
from .model import CampaignModel, load_model
from .occurrences import Occurrence
from .planner import Planner
from .sandbox import RenderLimits
from .status import Counts
from .steps import Timeline
from .templates import Templates, check_templates


@dataclass
class Runtime:
    model: CampaignModel
    templates: Templates
    timeline: Timeline = field(init=False)
    planner: Planner = field(init=False)
    _people: dict[str, Person] = field(init=False, repr=False)
    unit_index: dict[str, int] = field(init=False, repr=False)
    _gates: dict[str, datetime] = field(init=False, repr=False)
    blank_forms: BlankForms = field(init=False, repr=False)  # reminder attachments

    def __post_init__(self) -> None:
        self.timeline = Timeline(self.model)
        self.planner = Planner(self.timeline)
        self._people = {p.id: p for p in self.model.directory.people}
        self.unit_index = self.model.unit_index()
        self._gates = {}
        self.blank_forms = BlankForms()
        for gate in self.timeline.gates:
            self._gates[gate.occurrence.key] = min(
                gate.moment, self._gates.get(gate.occurrence.key, gate.moment)
            )

    @classmethod
    def load(
        cls, schedule: Path, contacts: Path, templates: Path, limits: RenderLimits | None = None
    ) -> Runtime:
        """Load and check everything; raises ConfigError and changes nothing on bad input."""
        model = load_model(schedule, contacts)
        return cls(model, check_templates(model, templates, limits))

    def person(self, person_id: str) -> Person | None:
        return self._people.get(person_id)

    def occurrence(self, key: str) -> Occurrence | None:
        obligation, _, period = key.partition("@")
        return self.model.occurrence(obligation, period)

    def still_overdue(
        self,
        units: Iterable[str],
        occurrence_keys: Iterable[str],
        slot: datetime,
        counts: Counts,
    ) -> list[tuple[str, str]]:
        """Of a digest's units × occurrences, those still owed, late, and past the gate."""
        out = []
        occs = [o for k in occurrence_keys if (o := self.occurrence(k)) is not None]
        for unit in units:
            for occ in occs:
                gate = self._gates.get(occ.key)
                if gate is None or gate > slot or not self.model.owes(unit, occ.obligation):
                    continue
                if counts.get((unit, occ.obligation, occ.period), 0) < occ.quota_min:
                    out.append((unit, occ.key))
        return out
