"""Who sent it and for when: unit names, sender addresses, file names, received dates."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePath

from ..model import CampaignModel
from ..occurrences import Occurrence
from .forms import norm

# Ways people shorten an office's name: 长春市安委会办公室 = 长春市安委办 = 长春市安委会 = 长春市.
_SUFFIXES = (
    "安全生产委员会办公室",
    "安全生产委员会",
    "安委会办公室",
    "安委会办",
    "安委办",
    "安委会",
    "办公室",
)


def core_name(name: str) -> str:
    text = norm(name)
    for suffix in _SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


class UnitIndex:
    """Unit look-up by name (exact, then by core name) and by a person's e-mail."""

    def __init__(self, model: CampaignModel) -> None:
        units = model.directory.units.values()
        self.by_id = {u.id: u for u in units}
        self.exact: dict[str, list[str]] = {}
        self.core: dict[str, list[str]] = {}
        for unit in units:
            self.exact.setdefault(norm(unit.name), []).append(unit.id)
            self.core.setdefault(core_name(unit.name), []).append(unit.id)
        self.by_email: dict[str, set[str]] = {}
        for person in model.directory.people:
            if person.email:
                self.by_email.setdefault(person.email.lower(), set()).add(person.unit)
        # What in_file_name compares, once per unit rather than once per unit and file.
        self._in_names = [
            (
                uid,
                norm(unit.name),
                core_name(unit.name),
                re.compile(rf"(?<![a-z0-9-]){re.escape(uid)}(?![a-z0-9-])"),
            )
            for uid, unit in self.by_id.items()
        ]
        self._core = {uid: core for uid, _name, core, _id in self._in_names}

    def by_name(self, name: str) -> list[str]:
        """Unit ids a written name may mean: one is a match, several are ambiguous."""
        text = norm(name)
        if text in self.by_id:
            return [text]
        if hits := self.exact.get(text):
            return hits
        return self.core.get(core_name(text), [])

    def of_sender(self, address: str | None) -> list[str]:
        return sorted(self.by_email.get((address or "").lower(), ()))

    def in_file_name(self, filename: str) -> list[str]:
        """Units whose name or id the file name contains (longest names first)."""
        stem = norm(PurePath(filename).stem)
        lowered = stem.lower()
        found = [
            uid
            for uid, name, core, by_id in self._in_names
            if name in stem or (len(core) >= 2 and core in stem) or by_id.search(lowered)
        ]
        # "吉林市" contains "吉林": keep only the most specific of overlapping names.
        core = self._core
        return [u for u in found if not any(o != u and core[u] in core[o] for o in found)]


def infer_period(model: CampaignModel, obligation: str, at: datetime) -> Occurrence | None:
    """The period open at ``at``, else the most recently due one, else the first one."""
    occs = [o for o in model.occurrences if o.obligation == obligation]
    if not occs:
        return None
    for occ in occs:
        if occ.opens_at <= at <= occ.due_at:
            return occ
    due = [o for o in occs if o.due_at < at]
    return due[-1] if due else occs[0]
