"""The standard-library xlsx reader gives exactly the grids openpyxl gave: same rows, same
values, same Python types (int vs float, datetime vs date, time as text), same refusals."""

# ruff: noqa: DTZ001 - spreadsheet cells hold naive dates and times

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from service.forms import blank_form, forms_in
from service.intake import xlsx
from service.intake.read import FormError, Grid, read_grids
from service.model import CampaignModel
from service.sheets import Sheet, xlsx_bytes
from tests.intake import openpyxl_reader
from tests.intake.conftest import LABELS_1, LABELS_2, liaison_form, progress_form, workbook
from tests.intake.test_read import _with_formula

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
WS_TYPE = REL + "/worksheet"


def _typed(grids: list[Grid]) -> list[tuple[str, list[tuple[int, list[tuple[str, Any]]]]]]:
    """Grids with each value's type name beside it: 3 and 3.0 must not compare equal."""
    return [
        (g.sheet, [(no, [(type(v).__name__, v) for v in vals]) for no, vals in g.rows])
        for g in grids
    ]


def _both(name: str, data: bytes) -> tuple[Any, Any]:
    out = []
    for reader in (openpyxl_reader.read_xlsx, read_grids):
        try:
            out.append(_typed(reader(name, data)))
        except FormError as exc:
            out.append(("FormError", str(exc)))
    return out[0], out[1]


def _assert_same(data: bytes, name: str = "a.xlsx") -> None:
    reference, ours = _both(name, data)
    assert ours == reference


def _fixtures() -> dict[str, Callable[[], bytes]]:
    """Every kind of workbook the intake tests build, plus the service's own writers."""
    return {
        "progress form": lambda: progress_form("长春市安委会办公室", [3] * 10),
        "progress form without title": lambda: progress_form("长春市", [1, 2], title=False),
        "numbers as text": lambda: progress_form(
            "长春市安委会办公室", ["12场", "３４０", " 7 ", "1,200", 0, 0, 0, 0, 0, 0]
        ),
        "bad values": lambda: progress_form("长春市", [-3, "十二", 1.5, 1e20, True, None, 2]),
        "liaison form": lambda: liaison_form("吉林市安委办", "王小明", "13900000011", "w@x.org"),
        "blank rows, totals, notes": lambda: workbook(
            {"S": [LABELS_2, [], ["农安县", 1, 2], ["合计", 4, 6], ["注：每周五报送"]]}
        ),
        "a sheet per unit": lambda: workbook(
            {"农安": [LABELS_2, ["农安县", 1]], "榆树": [LABELS_2, ["榆树市", 2]], "说明": [["x"]]}
        ),
        "unknown table": lambda: workbook({"S": [["姓名", "金额"], ["张三", 1]]}),
        "no unit column": lambda: workbook({"S": [LABELS_2, [None, 1, 2, 3]]}),
        "liaison labels": lambda: workbook({"附件1": [LABELS_1, ["x", "y", None, 1.0]]}),
        "formula with cached number": lambda: _with_formula("7"),
        "formula with cached decimal": lambda: _with_formula("7.25"),
        "formula without cached value": lambda: _with_formula(None),
        "report writer": lambda: xlsx_bytes(
            [
                Sheet(
                    "汇总", ["单位", "场次"], [["长春", 3], ["=1+1", 2.5], [None, date(2023, 6, 1)]]
                )
            ]
        ),
        "dates and times": lambda: workbook(
            {
                "S": [
                    [date(2023, 5, 20), datetime(2023, 5, 20, 10, 30, 15), time(9, 15)],
                    [datetime(1900, 1, 1), date(2099, 12, 31), time(0, 0, 1)],
                ]
            },
            merge_title=False,
        ),
    }


@pytest.mark.parametrize("kind", sorted(_fixtures()))
def test_intake_fixture_reads_the_same(kind: str) -> None:
    """Each workbook the intake tests use gives the same typed grids with both readers."""
    _assert_same(_fixtures()[kind]())


def test_blank_forms_read_the_same(office_model: CampaignModel) -> None:
    """The blank forms the service sends (empty and prefilled) read the same."""
    for _ob, form in forms_in(office_model.schedule):
        _assert_same(blank_form(form))
        _assert_same(blank_form(form, "长春市安委会办公室"))


_CELL = st.one_of(
    st.none(),
    st.integers(min_value=-(2**50), max_value=2**50),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8),
    st.booleans(),
    st.dates(min_value=date(1900, 3, 1), max_value=date(9999, 12, 31)),
    st.datetimes(min_value=datetime(1900, 3, 1), max_value=datetime(9999, 12, 30)),
    st.times(),
)
_FORMATS = ["General", "0", "0.00", "yyyy-mm-dd", 'yyyy"年"m"月"d"日"', "h:mm", "[h]:mm:ss", "@"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.tuples(_CELL, st.sampled_from(_FORMATS)), max_size=6), max_size=6),
    st.booleans(),
)
def test_random_workbooks_read_the_same(rows: list[list[tuple[Any, str]]], mac: bool) -> None:
    """Any mix of values and number formats, in either date system, reads the same."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    wb.epoch = datetime(1904, 1, 1) if mac else datetime(1899, 12, 30)
    for r, row in enumerate(rows, start=1):
        for c, (value, fmt) in enumerate(row, start=1):
            cell = ws.cell(row=r, column=c, value=value)
            cell.number_format = fmt
    buf = io.BytesIO()
    wb.save(buf)
    _assert_same(buf.getvalue())


# -- packages as Excel and WPS write them (not as openpyxl does) --------------------------


def _package(
    sheets: list[tuple[str, str]],
    shared: str | None = None,
    styles: str | None = None,
    workbook_pr: str = "",
    extra: dict[str, str] | None = None,
    rels: str = "",
) -> bytes:
    """A hand-written package: (name, sheetN.xml body) pairs and the optional parts."""
    overrides = [
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    ]
    if shared is not None:
        overrides.append(
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        )
    entries = "".join(
        f'<sheet name="{name}" sheetId="{i}" r:id="rId{i}"/>'
        for i, (name, _body) in enumerate(sheets, start=1)
    )
    relations = "".join(
        f'<Relationship Id="rId{i}" Type="{WS_TYPE}" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, len(sheets) + 1)
    )
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://'
        'schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" '
        f'ContentType="application/xml"/>{"".join(overrides)}</Types>',
        "_rels/.rels": f'<Relationships xmlns="{PKG_REL}"/>',
        "xl/workbook.xml": f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<workbook xmlns="{MAIN}" xmlns:r="{REL}">{workbook_pr}<sheets>{entries}</sheets>'
        "</workbook>",
        "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{PKG_REL}">{relations}{rels}'
        "</Relationships>",
    }
    for i, (_name, body) in enumerate(sheets, start=1):
        parts[f"xl/worksheets/sheet{i}.xml"] = (
            f'<worksheet xmlns="{MAIN}" xmlns:r="{REL}"><sheetData>{body}</sheetData></worksheet>'
        )
    if shared is not None:
        parts["xl/sharedStrings.xml"] = f'<sst xmlns="{MAIN}">{shared}</sst>'
    if styles is not None:
        parts["xl/styles.xml"] = f'<styleSheet xmlns="{MAIN}">{styles}</styleSheet>'
    parts.update(extra or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for member, text in parts.items():
            z.writestr(member, text.encode("utf-8"))
    return buf.getvalue()


_STYLES = (
    '<numFmts count="2"><numFmt numFmtId="176" formatCode="yyyy&quot;年&quot;m&quot;月&quot;d'
    '&quot;日&quot;"/><numFmt numFmtId="177" formatCode="0.0_ "/></numFmts>'
    '<cellXfs count="8"><xf numFmtId="0"/><xf numFmtId="14"/><xf numFmtId="176"/>'
    '<xf numFmtId="20"/><xf numFmtId="46"/><xf numFmtId="58"/><xf numFmtId="177"/><xf/>'
    "</cellXfs>"
)
_SHARED = (
    "<si><t>单位名称</t></si>"
    '<si><r><t>宣传</t></r><r><rPr><b/></rPr><t xml:space="preserve">活动 </t></r>'
    '<rPh sb="0" eb="1"><t>xuan</t></rPh></si>'
    '<si><t xml:space="preserve">  长春市  </t></si>'
    "<si><t/></si>"
    "<si><t>a_x005F_x000D_b</t></si>"
)


def test_excel_cell_kinds_read_the_same() -> None:
    """Shared (rich, phonetic), inline and formula strings, booleans, errors, ISO dates."""
    body = (
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c>'
        '<c r="C1" t="s"><v>2</v></c><c r="D1" t="s"><v>3</v></c><c r="E1" t="s"><v>4</v></c>'
        "</row>"
        '<row r="2"><c r="A2" t="inlineStr"><is><t>内联</t></is></c>'
        '<c r="B2" t="str"><f>A1&amp;"x"</f><v>单位名称x</v></c><c r="C2" t="b"><v>1</v></c>'
        '<c r="D2" t="e"><v>#N/A</v></c><c r="E2" t="d"><v>2023-05-20T10:30:00</v></c>'
        '<c r="F2" t="inlineStr"/><c r="G2"><v></v></c><c r="H2" t="b"><v>0</v></c></row>'
    )
    _assert_same(_package([("Sheet1", body)], shared=_SHARED))


def test_excel_numbers_and_number_formats_read_the_same() -> None:
    """3 stays int, 3.0 float; builtin, custom and CJK date formats; times; durations."""
    body = (
        '<row r="1"><c r="A1"><v>3</v></c><c r="B1"><v>3.0</v></c><c r="C1"><v>1E+20</v></c>'
        '<c r="D1"><v>-0</v></c><c r="E1"><v>0.1</v></c><c r="F1" s="6"><v>2.5</v></c></row>'
        '<row r="2"><c r="A2" s="1"><v>45066</v></c><c r="B2" s="2"><v>45066</v></c>'
        '<c r="C2" s="3"><v>0.5</v></c><c r="D2" s="4"><v>1.25</v></c>'
        '<c r="E2" s="5"><v>45066</v></c><c r="F2" s="1"><v>45066.75</v></c>'
        '<c r="G2" s="1"><v>0.25</v></c><c r="H2" s="1"><v>99999999</v></c>'
        '<c r="I2" s="7"><v>45066</v></c></row>'
    )
    _assert_same(_package([("S", body)], styles=_STYLES))


def test_a_default_style_with_a_date_format_reads_the_same() -> None:
    """Cells without a style take style 0, which may itself be a date format."""
    body = '<row r="1"><c r="A1"><v>45066</v></c><c r="B1" s="0"><v>45066</v></c></row>'
    styles = '<cellXfs count="1"><xf numFmtId="14"/></cellXfs>'
    reference, ours = _both("a.xlsx", _package([("S", body)], styles=styles))
    assert ours == reference and "datetime" in str(ours)


def test_1904_date_system_reads_the_same() -> None:
    """A Mac workbook's serial dates count from 1904, as openpyxl read them."""
    body = '<row r="1"><c r="A1" s="1"><v>43604</v></c><c r="B1" s="1"><v>10</v></c></row>'
    for flag in ("1", "true", "false", "0"):
        data = _package(
            [("S", body)], styles=_STYLES, workbook_pr=f'<workbookPr date1904="{flag}"/>'
        )
        _assert_same(data)


def test_rows_and_cells_without_references_read_the_same() -> None:
    """Rows or cells without r, gaps, rows out of order or repeated, r="7.0"."""
    body = (
        '<row><c><v>1</v></c><c><v>2</v></c><c r="E1"><v>5</v></c><c><v>6</v></c></row>'
        '<row r="4"><c r="C4"><v>3</v></c><c r="A4"><v>1</v></c></row>'
        '<row r="3"><c r="A3"><v>9</v></c></row>'
        '<row r="4"><c r="A4"><v>8</v></c></row>'
        "<row><c><v>1</v></c></row>"
        '<row r="7.0"><c r="B7"><v>7</v></c></row>'
        '<row r="9" spans="1:3" ht="20" customHeight="1"/>'
        '<row r="10"><c r="A10" s="0"/><c r="B10" s="0"/></row>'
        '<row r="11"><c r="B11"><v>11</v></c></row>'
    )
    _assert_same(_package([("S", body)]))


def test_sheet_order_absolute_targets_and_missing_parts_read_the_same() -> None:
    """Sheets in workbook order, absolute targets, and a sheet whose part is missing."""
    cell = '<row r="1"><c r="A1" t="inlineStr"><is><t>{}</t></is></c></row>'
    rels = (
        f'<Relationship Id="rId8" Type="{WS_TYPE}" Target="/xl/worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId9" Type="{WS_TYPE}" Target="worksheets/gone.xml"/>'
    )
    data = _package(
        [("第二", cell.format("二")), ("第一", cell.format("一"))],
        rels=rels,
        extra={
            "xl/workbook.xml": f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>'
            '<sheet name="乙" sheetId="2" r:id="rId2"/><sheet name="甲" sheetId="1" r:id="rId8"/>'
            '<sheet name="丢" sheetId="3" r:id="rId9"/><sheet name="无" sheetId="4"/>'
            '<sheet name="藏" sheetId="5" state="hidden" r:id="rId1"/></sheets></workbook>'
        },
    )
    _assert_same(data)


def test_shared_formula_without_cached_value_is_refused_the_same() -> None:
    """A shared formula's follower cell without a value is refused at the same cell."""
    body = (
        '<row r="1"><c r="A1"><f t="shared" ref="A1:A2" si="0">1+1</f><v>2</v></c></row>'
        '<row r="2"><c r="A2"><f t="shared" si="0"/></c></row>'
    )
    reference, ours = _both("f.xlsx", _package([("S", body)]))
    assert ours == reference and reference[0] == "FormError"


def test_a_part_declaring_a_dtd_is_refused() -> None:
    """A DOCTYPE (entity tricks; never in a real workbook) is refused, naming the file."""
    dtd = '<?xml version="1.0"?><!DOCTYPE sst [<!ENTITY a "aaaaaaaaaa">]>'
    data = _package(
        [("S", '<row r="1"><c r="A1" t="s"><v>0</v></c></row>')],
        shared="<si><t>&a;</t></si>",
        extra={"xl/sharedStrings.xml": f'{dtd}<sst xmlns="{MAIN}"><si><t>&a;</t></si></sst>'},
    )
    with pytest.raises(FormError, match=r"^d\.xlsx：.*DOCTYPE"):
        read_grids("d.xlsx", data)


def test_a_worksheet_declaring_a_dtd_is_refused_naming_the_sheet() -> None:
    """A DOCTYPE at the head of a worksheet is refused with the sheet's name."""
    sheet = (
        f'<!DOCTYPE worksheet [<!ENTITY a "x">]><worksheet xmlns="{MAIN}"><sheetData/></worksheet>'
    )
    data = _package([("表一", "")], extra={"xl/worksheets/sheet1.xml": sheet})
    with pytest.raises(FormError, match="工作表“表一”.*DOCTYPE"):
        read_grids("d.xlsx", data)


@pytest.mark.parametrize("kind", ["progress form", "a sheet per unit", "report writer"])
def test_parts_read_in_chunks_give_the_same_grids(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large parts are streamed rather than parsed whole: the grids do not change."""
    data = _fixtures()[kind]()
    whole = _typed(read_grids("a.xlsx", data))
    monkeypatch.setattr(xlsx, "_WHOLE", 0)
    monkeypatch.setattr(xlsx, "_CHUNK", 97)  # elements split across chunks
    assert _typed(read_grids("a.xlsx", data)) == whole


def test_excel_kinds_read_in_chunks_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared strings and sheets streamed in small chunks still match openpyxl."""
    monkeypatch.setattr(xlsx, "_WHOLE", 0)
    monkeypatch.setattr(xlsx, "_CHUNK", 64)
    test_excel_cell_kinds_read_the_same()
    test_rows_and_cells_without_references_read_the_same()
