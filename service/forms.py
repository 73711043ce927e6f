"""Blank forms (the notice's 附件N) as the service writes them: for `service forms` and as
attachments of reminder e-mails (``form.attach_to_reminders`` in the schedule).

Domain level: the delivery side attaches them without importing the intake, which reads
filled forms back (service/intake/forms.py builds on this module).
"""

from __future__ import annotations

import io
import re
import zipfile
from xml.sax.saxutils import escape

from .schedule import Form, Obligation, Schedule
from .sheets import Sheet, neutralise, xlsx_bytes

# Stands for the unit's name in a cached blank workbook (a private-use character: no
# name or label contains it, and no spreadsheet rule changes it).
_PLACEHOLDER = "\ue000unit\ue000"


def form_of(ob: Obligation) -> Form | None:
    return ob.form if isinstance(ob.form, Form) else None


def forms_in(schedule: Schedule) -> list[tuple[Obligation, Form]]:
    return [(ob, f) for ob in schedule.obligations if (f := form_of(ob)) is not None]


def blank_form(form: Form, unit_name: str = "") -> bytes:
    """The form as an xlsx people fill in: attachment, title, header, one (prefilled) row."""
    labels = [f.label + (f"（{f.unit}）" if f.unit else "") for f in form.fields]
    first = ["" for _ in form.fields]
    if unit_name and form.unit_field:
        first[[f.key for f in form.fields].index(form.unit_field)] = unit_name
    sheet = Sheet(
        title=form.attachment,
        header=[form.attachment],
        rows=[[form.title], [], labels, first],
        widths=[max(12.0, 2.2 * len(label)) for label in labels],
    )
    return xlsx_bytes([sheet])


def blank_file_name(ob: Obligation, form: Form, unit_name: str = "") -> str:
    base = f"{form.attachment}_{ob.key}_{form.title}"
    if unit_name:
        base += f"_{unit_name}"
    return re.sub(r'[\\/:*?"<>|\s]+', "_", base) + ".xlsx"


class BlankForms:
    """Blank forms prefilled per unit, for e-mails: each form is built by openpyxl once
    (tens of milliseconds) and copied per unit with the name put in (well under one).

    One instance per loaded schedule (the Runtime's): a reload starts afresh.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[str, bytes]]] = {}

    def xlsx(self, ob: Obligation, form: Form, unit_name: str) -> bytes:
        parts = self._parts.get(ob.key)
        if parts is None:
            with zipfile.ZipFile(io.BytesIO(blank_form(form, _PLACEHOLDER))) as z:
                parts = self._parts[ob.key] = [(i.filename, z.read(i)) for i in z.infolist()]
        # The same text blank_form would store: neutralised, then XML-escaped.
        old = escape(_PLACEHOLDER).encode()
        new = escape(str(neutralise(unit_name))).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
            for name, content in parts:
                out.writestr(
                    zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)),
                    content.replace(old, new),
                    zipfile.ZIP_DEFLATED,
                )
        return buf.getvalue()
