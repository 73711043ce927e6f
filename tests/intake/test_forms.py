"""Forms declared in the schedule: the shipped 附件1/附件2 and validation of new ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.intake.forms import blank_form, form_of, forms_in
from service.model import CampaignModel
from service.schedule import parse_schedule
from tests.conftest import ROOT

SHIPPED = ROOT / "schedules" / "jilin-2023.yaml"


def test_liaison_form_has_the_notices_columns(model: CampaignModel) -> None:
    """附件1 carries exactly the seven columns the notice prints."""
    form = form_of(model.schedule.obligation("liaison-registration"))
    assert form is not None
    assert [f.label for f in form.fields] == [
        "单位名称",
        "联络员姓名",
        "职务",
        "办公电话",
        "手机",
        "电子邮箱",
        "备注",
    ]


def test_progress_form_has_the_default_columns(model: CampaignModel) -> None:
    """附件2's default columns are integers with their unit of measure."""
    form = form_of(model.schedule.obligation("weekly-progress"))
    assert form is not None
    counted = [(f.label, f.unit) for f in form.fields if f.type == "integer"]
    assert len(counted) == 10 and counted[0] == ("宣传活动场次", "场")


def test_reminders_keep_showing_the_forms_name(model: CampaignModel) -> None:
    """Where reminders showed the form string, they now show "附件N title"."""
    ob = model.schedule.obligation("weekly-progress")
    assert str(ob.form) == "附件2 全省“安全生产月”活动进展情况统计表"


def test_only_obligations_with_forms_are_listed(model: CampaignModel) -> None:
    """forms_in lists the two obligations that declare a form."""
    assert [ob.key for ob, _ in forms_in(model.schedule)] == [
        "liaison-registration",
        "weekly-progress",
    ]


def _with(old: str, new: str, tmp_path: Path) -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "s.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_duplicate_field_key_is_a_located_error(tmp_path: Path) -> None:
    """Two fields with one key: the error names the file, line and obligation's form."""
    path = _with("{key: position, label: 职务", "{key: mobile, label: 职务", tmp_path)
    with pytest.raises(ConfigError) as exc:
        parse_schedule(path)
    [problem] = exc.value.problems
    assert "obligations[0].form" in problem.field and "unique" in problem.message
    assert problem.line is not None


def test_unknown_field_type_is_refused(tmp_path: Path) -> None:
    """A field type outside text|integer|phone|email|date is refused."""
    path = _with("type: integer, unit: 场}", "type: money, unit: 场}", tmp_path)
    with pytest.raises(ConfigError, match="money|literal_error|Input should be"):
        parse_schedule(path)


def test_liaison_proposal_needs_the_contact_fields(tmp_path: Path) -> None:
    """proposes_liaison on a form without a mobile field is refused."""
    path = _with(
        "        - {key: mobile, label: 手机, type: phone, required: true, "
        "aliases: [手机号码, 移动电话]}\n",
        "",
        tmp_path,
    )
    with pytest.raises(ConfigError, match="proposes_liaison"):
        parse_schedule(path)


def test_blank_form_neutralises_a_formula_like_unit_name(model: CampaignModel) -> None:
    """A unit name starting with "=" is written as text, never as a formula."""
    import io

    from openpyxl import load_workbook

    form = form_of(model.schedule.obligation("weekly-progress"))
    assert form is not None
    ws = load_workbook(io.BytesIO(blank_form(form, "=HYPERLINK(1)"))).active
    assert ws is not None and ws["A5"].value == "'=HYPERLINK(1)"
