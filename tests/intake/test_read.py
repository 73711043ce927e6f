"""Reading filled forms: Excel/WPS habits are tolerated, dangerous files are refused."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.intake import read
from service.intake.forms import form_of, read_tables
from service.intake.read import FormError, read_grids
from service.model import CampaignModel
from tests.intake.conftest import LABELS_2, progress_form, workbook


def _progress(model: CampaignModel, name: str, data: bytes) -> list[dict[str, object]]:
    form = form_of(model.schedule.obligation("weekly-progress"))
    assert form is not None
    return [r.as_json() for t in read_tables(read_grids(name, data), form) for r in t.rows]


def test_header_is_found_below_merged_title_rows(office_model: CampaignModel) -> None:
    """Title rows (merged across) above the header do not hide the table."""
    rows = _progress(office_model, "a.xlsx", progress_form("长春市安委会办公室", [3] * 10))
    assert rows[0]["values"]["events"] == 3 and rows[0]["row"] == 5


def test_numbers_typed_as_text_full_width_and_with_units_are_read(
    office_model: CampaignModel,
) -> None:
    """ "12场", "３４０" and " 7 " are numbers; the problems list stays empty."""
    data = progress_form("长春市安委会办公室", ["12场", "３４０", " 7 ", "1,200", 0, 0, 0, 0, 0, 0])
    row = _progress(office_model, "a.xlsx", data)[0]
    values = row["values"]
    assert isinstance(values, dict)
    assert [values[k] for k in ("events", "participants", "materials", "banners")] == [
        12,
        340,
        7,
        1200,
    ]
    assert row["problems"] == []


def test_bad_values_are_kept_and_located(office_model: CampaignModel) -> None:
    """A negative or non-numeric cell is kept as written, with its cell in the problem."""
    data = progress_form("长春市安委会办公室", [-3, "十二", 1, 1, 1, 1, 1, 1, 1, 1])
    row = _progress(office_model, "a.xlsx", data)[0]
    assert row["problems"] == [
        "单元格 B5（宣传活动场次）：不能为负数：-3",
        "单元格 C5（参与人次）：应为整数（单位：人次），实际为 '十二'",
    ]


def test_blank_rows_notes_and_total_rows_are_skipped(office_model: CampaignModel) -> None:
    """Blank rows, a 合计 row and a note under the table are not data."""
    data = workbook(
        {
            "S": [
                LABELS_2,
                [],
                ["农安县安委会办公室", 1, 2],
                ["榆树市安委会办公室", 3, 4],
                ["合计", 4, 6],
                ["注：本表每周五报送"],
            ]
        }
    )
    rows = _progress(office_model, "a.xlsx", data)
    assert [r["unit_name"] for r in rows] == ["农安县安委会办公室", "榆树市安委会办公室"]


def test_a_sheet_per_unit_is_read_sheet_by_sheet(office_model: CampaignModel) -> None:
    """Each sheet with the header contributes its rows, named by its sheet."""
    data = workbook(
        {
            "农安": [LABELS_2, ["农安县安委会办公室", 1]],
            "榆树": [LABELS_2, ["榆树市安委会办公室", 2]],
            "说明": [["填表说明"]],
        }
    )
    rows = _progress(office_model, "a.xlsx", data)
    assert [(r["sheet"], r["unit_name"]) for r in rows] == [
        ("农安", "农安县安委会办公室"),
        ("榆树", "榆树市安委会办公室"),
    ]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
def test_csv_in_utf8_bom_and_gb18030_is_read(office_model: CampaignModel, encoding: str) -> None:
    """CSV saved by Excel (BOM), by scripts (UTF-8) and by WPS (GB18030) reads the same."""
    text = ",".join(LABELS_2) + "\n长春市安委会办公室,5,60\n"
    rows = _progress(office_model, "a.csv", text.encode(encoding))
    assert rows[0]["unit_name"] == "长春市安委会办公室"
    values = rows[0]["values"]
    assert isinstance(values, dict) and values["participants"] == 60


def test_xlsm_is_refused_by_name() -> None:
    """A macro workbook is refused before anything reads it."""
    with pytest.raises(FormError, match="宏"):
        read_grids("周报.xlsm", progress_form("x", [1]))


def test_vba_project_inside_an_xlsx_is_refused() -> None:
    """A renamed macro workbook (vbaProject.bin inside) is refused."""
    buf = io.BytesIO(progress_form("x", [1]))
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("xl/vbaProject.bin", b"\x00" * 100)
    with pytest.raises(FormError, match="vbaProject"):
        read_grids("周报.xlsx", buf.getvalue())


def test_encrypted_workbook_is_refused_with_advice() -> None:
    """Password-protected xlsx files are OLE containers: refused, with what to do."""
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    with pytest.raises(FormError, match="取消密码保护"):
        read_grids("周报.xlsx", data)


def test_zip_bomb_is_refused_without_inflating_it() -> None:
    """A member that inflates far beyond its compressed size is refused."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b" " * (8 * 2**20))
    with pytest.raises(FormError, match="压缩炸弹"):
        read_grids("bomb.xlsx", buf.getvalue())


def test_huge_sheet_is_refused_naming_the_sheet(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than the bound: refused, naming the sheet."""
    monkeypatch.setattr(read, "MAX_ROWS", 30)
    data = workbook({"大表": [[n] for n in range(40)]}, merge_title=False)
    with pytest.raises(FormError, match="工作表“大表”.*行数超过 30"):
        read_grids("big.xlsx", data)


def test_too_many_cells_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """More non-empty cells than the bound: refused."""
    monkeypatch.setattr(read, "MAX_CELLS", 50)
    data = workbook({"S": [list(range(10)) for _ in range(6)]}, merge_title=False)
    with pytest.raises(FormError, match="非空单元格超过 50"):
        read_grids("big.xlsx", data)


def _with_formula(cached: str | None) -> bytes:
    data = workbook({"S": [LABELS_2, ["长春市安委会办公室", "=1+1"]]}, merge_title=False)
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml" and cached is not None:
                body = re.sub(
                    rb"<f>1\+1</f>(<v\s*/>|<v></v>)?", f"<f>1+1</f><v>{cached}</v>".encode(), body
                )
            z.writestr(info, body)
    return out.getvalue()


def test_formula_with_cached_value_reads_the_value(office_model: CampaignModel) -> None:
    """A formula Excel saved with its result gives that result; nothing is evaluated."""
    rows = _progress(office_model, "f.xlsx", _with_formula("7"))
    values = rows[0]["values"]
    assert isinstance(values, dict) and values["events"] == 7


def test_formula_without_cached_value_is_refused_naming_the_cell() -> None:
    """A formula never calculated (written by a script) is refused at its cell."""
    with pytest.raises(FormError, match="工作表“S”，单元格 B2：这是公式"):
        read_grids("f.xlsx", _with_formula(None))


def test_csv_with_binary_content_is_refused() -> None:
    """Binary garbage named .csv is refused, not read as text."""
    with pytest.raises(FormError, match="二进制"):
        read_grids("a.csv", b"\x00\x01\x02abc")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.sampled_from(["a.xlsx", "a.csv", "a.xls", "a"]))
def test_arbitrary_bytes_give_grids_or_a_located_error(data: bytes, name: str) -> None:
    """Whatever arrives, the reader answers with grids or a FormError naming the file."""
    try:
        grids = read_grids(name, data)
    except FormError as exc:
        assert str(exc).startswith(name)
    else:
        assert all(isinstance(g.rows, list) for g in grids)


_VALID = progress_form("长春市安委会办公室", [1, 2, 3])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_corrupted_xlsx_gives_grids_or_a_located_error(at: int, junk: bytes) -> None:
    """A valid workbook with bytes overwritten never escapes as an unexpected exception."""
    data = _VALID[:at] + junk + _VALID[at + len(junk) :]
    try:
        read_grids("c.xlsx", data)
    except FormError as exc:
        assert str(exc).startswith("c.xlsx")


def test_blank_form_round_trips(office_model: CampaignModel, tmp_path: Path) -> None:
    """The blank 附件2 the service writes is read back as a header with the unit prefilled."""
    from service.intake.forms import blank_form

    form = form_of(office_model.schedule.obligation("weekly-progress"))
    assert form is not None
    rows = _progress(office_model, "b.xlsx", blank_form(form, "长春市安委会办公室"))
    assert rows[0]["unit_name"] == "长春市安委会办公室"


def test_zip_members_marked_encrypted_are_refused() -> None:
    """Zip-level encrypted members (flag bit 0) give a located error, not a RuntimeError."""
    data = bytearray(progress_form("x", [1]))
    at = data.find(b"PK\x01\x02")
    while at != -1:
        data[at + 8] |= 1
        at = data.find(b"PK\x01\x02", at + 4)
    with pytest.raises(FormError, match="c.xlsx"):
        read_grids("c.xlsx", bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=True)))
def test_integer_cell_is_a_count_or_a_problem(raw: object) -> None:
    """Any cell in a count column is a non-negative integer, or kept with a problem."""
    from service.intake.forms import parse_value
    from service.schedule import FormField

    value, problem = parse_value(
        FormField(key="events", label="场次", type="integer", unit="场"), raw
    )  # type: ignore[arg-type]
    if problem is None:
        assert value is None or (isinstance(value, int) and value >= 0)
    else:
        assert value is not None and problem
