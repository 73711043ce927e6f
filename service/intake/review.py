"""The office's review queue: files intake could not place, and proposed liaison changes.

A confirmed liaison change rewrites ``people.csv`` in the contacts folder atomically (after
checking the whole directory still loads). The file stays the one source of truth the
operators edit and version; the running daemon reloads it when its mtime changes, so the
next reminders go to the new liaison. ``directory_changes`` keeps who changed what.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
from pydantic import ValidationError

from ..directory import Person, load_directory
from ..errors import ConfigError, LedgerError
from ..submissions import MAX_COUNT, check
from .forms import form_of
from .store import ReviewItem

if TYPE_CHECKING:
    from .core import Decision, Intake


def _e164(mobile: Any) -> str | None:
    if not mobile:
        return None
    try:
        number = phonenumbers.parse(str(mobile), "CN")
    except phonenumbers.NumberParseException:
        return str(mobile)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


async def propose_liaisons(intake: Intake, eid: int, d: Decision) -> list[int]:
    """After a 附件1 is recorded: one review item per unit whose liaison would change."""
    return [
        await intake.store.add_review("liaison", eid, reason, proposal)
        for reason, proposal in liaison_proposals(intake, d)
    ]


def liaison_proposals(intake: Intake, d: Decision) -> list[tuple[str, dict[str, Any]]]:
    """(reason, proposal) for each unit of a recorded 附件1 whose liaison would change."""
    assert d.obligation is not None
    form = form_of(intake.model.schedule.obligation(d.obligation))
    if form is None or not form.proposes_liaison:
        return []
    out = []
    for unit, rows in d.units.items():
        values = rows[0].values
        name = str(values.get("liaison_name") or "").strip()
        if not name:
            continue
        proposal = {
            "unit": unit,
            "name": name,
            "mobile": _e164(values.get("mobile")),
            "email": values.get("email") or None,
            "office_phone": values.get("office_phone"),
            "position": values.get("position"),
            "problems": rows[0].problems,
        }
        current = intake.model.directory.people_of(unit, "liaison")
        if current:
            p = current[0]
            proposal["current"] = {"id": p.id, "name": p.name, "mobile": p.mobile, "email": p.email}
            if (p.name, p.mobile, p.email) == (name, proposal["mobile"], proposal["email"]):
                continue
        unit_name = intake.model.directory.units[unit].name
        reason = f"{unit_name} 报送的联络员为 {name}，与名录不同：确认后提醒发给新联络员"
        out.append((reason, proposal))
    return out


async def accept(
    intake: Intake,
    item: ReviewItem,
    contacts: Path,
    *,
    unit: str | None = None,
    obligation: str | None = None,
    period: str | None = None,
    note: str = "",
) -> str:
    """Carry out an open item; returns what was done (Chinese). Raises LedgerError."""
    if item.status != "open":
        raise LedgerError(f"review: #{item.id} is already {item.status}")
    if item.kind == "liaison":
        person = apply_liaison(contacts, item.proposal)
        await intake.store.add_directory_change(
            item.id,
            item.proposal["unit"],
            person["id"],
            item.proposal.get("current"),
            person,
            str(contacts),
            intake.actor,
        )
        await intake.store.decide(item.id, "accepted", intake.actor, note)
        return f"已更新名录：{item.proposal['unit']} 的联络员为 {person['name']}（{person['id']}）"
    evidence = await intake.store.evidence(item.evidence_id or 0)
    if evidence is None:
        raise LedgerError(f"review: #{item.id} has no received file")
    ob = obligation or item.proposal.get("obligation")
    per = period or item.proposal.get("period")
    units = [unit] if unit else list(item.proposal.get("units") or [])
    if not ob or not per or not units:
        raise LedgerError("review: 请用 --unit、--obligation、--period 指明单位、事项和期次")
    occ = intake.model.occurrence(ob, per)
    many = occ is not None and occ.quota_goal > 1
    counts = {u: min(MAX_COUNT, max(1, len(evidence.rows))) if many else 1 for u in units}
    for u, n in counts.items():
        check(intake.model, u, ob, per, n)
    ids = await intake.record(evidence.id, ob, per, counts, evidence.received_at, None)
    await intake.store.finish(
        evidence.id,
        status="recorded",
        unit_id=units[0] if len(units) == 1 else None,
        obligation=ob,
        period=per,
        submission_ids=ids,
    )
    await intake.store.decide(item.id, "accepted", intake.actor, note)
    return f"已登记 {ob}@{per}：{'、'.join(units)}（记录 {', '.join(map(str, ids))}）"


async def reject(intake: Intake, item: ReviewItem, reason: str) -> str:
    if item.status != "open":
        raise LedgerError(f"review: #{item.id} is already {item.status}")
    if not await intake.store.decide(item.id, "rejected", intake.actor, reason):
        raise LedgerError(f"review: #{item.id} was decided meanwhile")
    if item.kind == "submission" and item.evidence_id is not None:
        await intake.store.finish(item.evidence_id, status="rejected")
    return f"已驳回 #{item.id}" + (f"：{reason}" if reason else "")


def apply_liaison(contacts: Path, proposal: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the unit's liaison row of ``people.csv`` (or add one); all or nothing."""
    path = contacts / "people.csv"
    if not path.exists():
        raise LedgerError("review: 只能自动修改 people.csv（YAML 名录请手工修改）")
    raw = path.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    newline = "\r\n" if "\r\n" in text else "\n"
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = list(reader)
    unit = proposal["unit"]
    target = next((r for r in rows if r.get("unit") == unit and r.get("role") == "liaison"), None)
    if target is None:
        ids = {r.get("id") for r in rows}
        new_id = next(
            i
            for i in (f"{unit}-liaison", *(f"{unit}-liaison-{n}" for n in range(2, 99)))
            if i not in ids
        )
        target = dict.fromkeys(header, "") | {"id": new_id, "unit": unit, "role": "liaison"}
        rows.append(target)
    target["name"] = proposal["name"]
    target["mobile"] = proposal.get("mobile") or ""
    target["email"] = proposal.get("email") or ""
    try:
        fields: dict[str, Any] = {
            k: v for k, v in target.items() if k in Person.__dataclass_fields__
        }
        person = Person(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_url=False))
        raise LedgerError(f"review: 联络员信息不能写入名录（{problems}）") from None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, lineterminator=newline, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8-sig" if bom else "utf-8")
    _replace_checked(contacts, path, data)
    return {"id": person.id, "name": person.name, "mobile": person.mobile, "email": person.email}


def _replace_checked(contacts: Path, path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` only if the directory with it still loads."""
    with tempfile.TemporaryDirectory(prefix="contacts-check-") as tmp:
        for other in contacts.iterdir():
            if other.is_file() and other.name != path.name:
                shutil.copy2(other, Path(tmp) / other.name)
        (Path(tmp) / path.name).write_bytes(data)
        try:
            load_directory(Path(tmp))
        except ConfigError as exc:
            raise LedgerError(f"review: 修改后名录无法加载：{exc.problems[0].message}") from None
    fd, tmp_path = tempfile.mkstemp(dir=path.parent, prefix=".people-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_path, path.stat().st_mode & 0o777)
        os.replace(tmp_path, path)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise
