"""The directory: shipped sample, located CSV/YAML errors, subtree() and select()."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.directory import Directory, load_directory
from service.errors import ConfigError, Problem
from service.schedule import Selector

ROOT = Path(__file__).resolve().parent.parent
UNITS = (ROOT / "contacts" / "units.csv").read_text(encoding="utf-8")
PEOPLE = (ROOT / "contacts" / "people.csv").read_text(encoding="utf-8")
REGIONS = [
    "changchun", "jilin-city", "siping", "liaoyuan", "tonghua", "baishan",
    "songyuan", "baicheng", "yanbian", "changbaishan", "meihekou",
]  # fmt: skip


@pytest.fixture(scope="module")
def sample(contacts_dir: Path) -> Directory:
    return load_directory(contacts_dir)


@pytest.fixture
def write_contacts(tmp_path: Path) -> Callable[..., Path]:
    """Write units/people files (CSV by default) into a fresh folder; return it."""
    counter = iter(range(1000))

    def write(units: str = UNITS, people: str = PEOPLE, suffix: str = ".csv") -> Path:
        folder = tmp_path / f"contacts-{next(counter)}"
        folder.mkdir()
        (folder / f"units{suffix}").write_text(units, encoding="utf-8")
        (folder / f"people{suffix}").write_text(people, encoding="utf-8")
        return folder

    return write


@pytest.fixture
def problems_of(
    write_contacts: Callable[..., Path],
) -> Callable[..., list[tuple[str, int | None, str]]]:
    """Load a directory that must fail; return (file name, line, field) per problem."""

    def run(**files: str) -> list[tuple[str, int | None, str]]:
        with pytest.raises(ConfigError) as info:
            load_directory(write_contacts(**files))
        return [(Path(p.file).name, p.line, p.field) for p in info.value.problems]

    return run


def replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, prefix: str) -> int:
    """1-based line of the only line starting with ``prefix``."""
    [n] = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(prefix)]
    return n


# --- the shipped sample -------------------------------------------------------


def test_sample_has_eleven_regions(sample: Directory) -> None:
    """The sample lists the 11 regional offices, all under the province."""
    regions = [u.id for u in sample.units.values() if u.kind == "region"]
    assert sorted(regions) == sorted(REGIONS)
    assert {sample.units[r].parent for r in regions} == {"jilin"}


def test_sample_counties(sample: Directory) -> None:
    """Counties sit under changchun and yanbian."""
    counties = {u.id: u.parent for u in sample.units.values() if u.kind == "county"}
    assert counties == {
        "nongan": "changchun",
        "yushu": "changchun",
        "dehui": "changchun",
        "yanji": "yanbian",
        "hunchun": "yanbian",
        "dunhua": "yanbian",
    }


def test_sample_supervisors_have_scopes(sample: Directory) -> None:
    """Each region has a supervisor scoped to it; two provincial ones see jilin."""
    scopes = sorted((p.scope or "") for p in sample.supervisors())
    assert scopes == sorted([*REGIONS, "jilin", "jilin"])
    assert all(p.scope for p in sample.supervisors())


def test_sample_contacts_are_fictitious(sample: Directory) -> None:
    """Sample emails are on example.org and mobiles are +86138000000xx samples."""
    assert all(p.email is None or p.email.endswith("@example.org") for p in sample.people)
    mobiles = [p.mobile for p in sample.people if p.mobile]
    assert mobiles
    assert all(re.fullmatch(r"\+86138000000\d\d", m) for m in mobiles)


def test_sample_every_unit_has_a_liaison(sample: Directory) -> None:
    """Every reporting unit has exactly one liaison."""
    for uid, unit in sample.units.items():
        if unit.kind != "province":
            assert len(sample.people_of(uid, "liaison")) == 1, uid


def test_tags_are_split(sample: Directory) -> None:
    """The tags column becomes a tuple."""
    assert sample.units["changbaishan"].tags == ("management-committee",)
    assert sample.units["jilin"].tags == ()


def test_subtree_of_region(sample: Directory) -> None:
    """subtree(changchun) is changchun and its three counties, depth first."""
    assert sample.subtree("changchun") == ["changchun", "nongan", "yushu", "dehui"]


def test_subtree_of_province_is_everything(sample: Directory) -> None:
    """subtree(jilin) contains every unit once."""
    tree = sample.subtree("jilin")
    assert tree[0] == "jilin"
    assert sorted(tree) == sorted(sample.units)


def test_subtree_of_leaf(sample: Directory) -> None:
    """A county's subtree is itself."""
    assert sample.subtree("yanji") == ["yanji"]


def test_select_by_kind_tag_and_id(sample: Directory) -> None:
    """select() is the union of kinds, tags and ids, minus exclusions."""
    assert sample.select(Selector(kinds=["enterprise"])) == [
        "ent-petrochem", "ent-automotive", "ent-power", "ent-steel",
    ]  # fmt: skip
    assert sample.select(Selector(tags=["central-soe"], units=["yanji"])) == [
        "yanji", "ent-petrochem", "ent-automotive",
    ]  # fmt: skip
    assert (
        sample.select(Selector(kinds=["region"], exclude=["changbaishan", "meihekou"]))
        == (REGIONS[:9])
    )


def test_select_nothing(sample: Directory) -> None:
    """A selector matching nobody selects an empty list."""
    assert sample.select(Selector(tags=["no-such-tag"])) == []


def test_sample_loads_as_yaml_too(write_contacts: Callable[..., Path], sample: Directory) -> None:
    """The same directory written as YAML loads to the same units and people."""
    units = [dict(r) for r in csv.DictReader(io.StringIO(UNITS))]
    people = [dict(r) for r in csv.DictReader(io.StringIO(PEOPLE))]

    def dump(records: list[dict[str, str]]) -> str:
        out = []
        for rec in records:
            items = [(k, v) for k, v in rec.items() if v]
            out += [f"{'- ' if i == 0 else '  '}{k}: '{v}'" for i, (k, v) in enumerate(items)]
        return "\n".join(out) + "\n"

    loaded = load_directory(write_contacts(dump(units), dump(people), ".yaml"))
    assert loaded.units == sample.units
    assert loaded.people == sample.people


# --- located CSV errors -------------------------------------------------------


def test_invalid_mobile(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A mobile that is not a mainland mobile is reported on its row and column."""
    people = replace(PEOPLE, "+8613800000003", "12345")
    assert problems_of(people=people) == [("people.csv", 4, "mobile")]


def test_landline_is_not_a_mobile(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A valid landline number is refused in the mobile column."""
    people = replace(PEOPLE, "+8613800000005", "+86 431 8888 8888")
    assert problems_of(people=people) == [("people.csv", 6, "mobile")]


def test_mobile_is_normalised(write_contacts: Callable[..., Path]) -> None:
    """A national-format mobile is stored in E.164."""
    people = replace(PEOPLE, "+8613800000003", "138 0000 0003")
    directory = load_directory(write_contacts(people=people))
    [liaison] = directory.people_of("jilin-city", "liaison")
    assert liaison.mobile == "+8613800000003"


def test_invalid_email(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A malformed email is reported on its row and column."""
    people = replace(PEOPLE, "jilin-city-liaison@example.org", "not-an-email")
    assert problems_of(people=people) == [("people.csv", 4, "email")]


def test_unknown_parent(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A parent that is not a unit is reported on the unit's row."""
    units = replace(
        UNITS,
        "nongan,农安县安委会办公室,county,changchun,",
        "nongan,农安县安委会办公室,county,changchunn,",
    )
    assert problems_of(units=units) == [("units.csv", line_of(UNITS, "nongan,"), "parent")]


def test_duplicate_unit_id(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A unit id used twice is reported on the second row."""
    units = UNITS + "siping,重复的四平,region,jilin,\n"
    assert problems_of(units=units) == [("units.csv", len(UNITS.splitlines()) + 1, "id")]


def test_duplicate_person_id(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A person id used twice is reported on the second row."""
    people = PEOPLE + "siping-liaison,重复,siping,liaison,,dup@example.org,\n"
    assert problems_of(people=people) == [("people.csv", len(PEOPLE.splitlines()) + 1, "id")]


def test_supervisor_without_scope(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A supervisor without a scope is refused on its row."""
    people = replace(PEOPLE, "supervisor,siping,", "supervisor,,")
    [(name, line, _field)] = problems_of(people=people)
    assert (name, line) == ("people.csv", line_of(PEOPLE, "siping-supervisor,"))


def test_supervisor_without_scope_names_column(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """The missing scope is reported in the scope column."""
    people = replace(PEOPLE, "supervisor,siping,", "supervisor,,")
    assert problems_of(people=people) == [
        ("people.csv", line_of(PEOPLE, "siping-supervisor,"), "scope")
    ]


def test_supervisor_unknown_scope(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A supervisor scoped to an unknown unit is reported in the scope column."""
    people = replace(PEOPLE, "supervisor,siping,", "supervisor,sipin,")
    assert problems_of(people=people) == [
        ("people.csv", line_of(PEOPLE, "siping-supervisor,"), "scope")
    ]


def test_person_without_contact(write_contacts: Callable[..., Path]) -> None:
    """A person with neither email nor mobile is refused on their row."""
    row = "jilin-city-head,陈志强,jilin-city,head,,jilin-city-head@example.org,"
    row += "+8613800000004"
    people = replace(PEOPLE, row, "jilin-city-head,陈志强,jilin-city,head,,,")
    with pytest.raises(ConfigError) as info:
        load_directory(write_contacts(people=people))
    [problem] = info.value.problems
    assert (Path(problem.file).name, problem.line) == ("people.csv", 5)
    assert "give an email or a mobile number" in problem.message


def test_person_in_unknown_unit(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A person attached to an unknown unit is reported in the unit column."""
    people = replace(PEOPLE, "siping-liaison,杨秀英,siping,", "siping-liaison,杨秀英,sipin,")
    assert problems_of(people=people) == [("people.csv", 6, "unit")]


def test_parent_cycle(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """Two units that are each other's parent are reported as a cycle."""
    units = replace(
        UNITS,
        "changchun,长春市安委会办公室,region,jilin,",
        "changchun,长春市安委会办公室,region,nongan,",
    )
    problems = problems_of(units=units)
    assert ("units.csv", line_of(UNITS, "changchun,"), "parent") in problems
    assert ("units.csv", line_of(UNITS, "nongan,"), "parent") in problems
    assert {field for _, _, field in problems} == {"parent"}


def test_parent_cycle_names_only_its_members(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """Only the units on the cycle are reported, not their descendants."""
    units = replace(
        UNITS,
        "changchun,长春市安委会办公室,region,jilin,",
        "changchun,长春市安委会办公室,region,nongan,",
    )
    assert problems_of(units=units) == [
        ("units.csv", line_of(UNITS, "changchun,"), "parent"),
        ("units.csv", line_of(UNITS, "nongan,"), "parent"),
    ]


def test_unknown_kind(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A unit kind outside the list is reported in the kind column."""
    units = replace(
        UNITS,
        "ent-steel,中省属企业丁（钢铁）,enterprise",
        "ent-steel,中省属企业丁（钢铁）,factory",
    )
    problems = problems_of(units=units)
    assert problems[0] == ("units.csv", line_of(UNITS, "ent-steel,"), "kind")


def test_extra_cells(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A row with more cells than the header is refused on its line."""
    units = UNITS + "x,X,region,jilin,tag,surplus\n"
    assert problems_of(units=units) == [("units.csv", len(UNITS.splitlines()) + 1, "")]


def test_all_problems_reported_together(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """Problems in both files are reported in one go."""
    units = UNITS + "siping,重复的四平,region,jilin,\n"
    people = replace(PEOPLE, "+8613800000003", "12345")
    problems = problems_of(units=units, people=people)
    assert ("people.csv", 4, "mobile") in problems
    assert ("units.csv", len(UNITS.splitlines()) + 1, "id") in problems


def test_missing_files(tmp_path: Path) -> None:
    """A folder without units/people files is a ConfigError."""
    with pytest.raises(ConfigError, match="file not found"):
        load_directory(tmp_path)


# --- YAML variant -------------------------------------------------------------

UNITS_YAML = """\
- id: prov
  name: Province
  kind: province
- id: reg
  name: Region
  kind: region
  parent: prov
- id: cty
  name: County
  kind: county
  parent: reg
"""
PEOPLE_YAML = """\
- id: a
  name: A
  unit: reg
  role: liaison
  email: a@example.org
- id: b
  name: B
  unit: cty
  role: liaison
  mobile: "13800000002"
- id: c
  name: C
  unit: prov
  role: supervisor
  scope: prov
  email: c@example.org
"""


def test_yaml_directory_loads(write_contacts: Callable[..., Path]) -> None:
    """A YAML directory loads like a CSV one."""
    directory = load_directory(write_contacts(UNITS_YAML, PEOPLE_YAML, ".yaml"))
    assert directory.subtree("prov") == ["prov", "reg", "cty"]
    assert [p.mobile for p in directory.people] == [None, "+8613800000002", None]


def test_yaml_field_error_has_its_line(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """In YAML, a bad value is reported on its own line."""
    people = replace(PEOPLE_YAML, '"13800000002"', '"12345"')
    assert problems_of(units=UNITS_YAML, people=people, suffix=".yaml") == [
        ("people.yaml", 10, "[1].mobile")
    ]


def test_yaml_record_error_has_its_line(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """In YAML, a record-level problem is reported on the record's line."""
    people = replace(PEOPLE_YAML, "  scope: prov\n", "")
    assert problems_of(units=UNITS_YAML, people=people, suffix=".yaml") == [
        ("people.yaml", 11, "scope")
    ]


def test_yaml_unknown_parent_points_at_parent_line(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """An unknown parent in YAML points at the parent: line."""
    units = replace(UNITS_YAML, "  parent: reg\n", "  parent: nowhere\n")
    assert problems_of(units=units, people=PEOPLE_YAML, suffix=".yaml") == [
        ("units.yaml", 11, "parent")
    ]


def test_yaml_not_a_list(
    problems_of: Callable[..., list[tuple[str, int | None, str]]],
) -> None:
    """A YAML directory file must be a list of records."""
    assert problems_of(units="id: x\n", people=PEOPLE_YAML, suffix=".yaml")[0] == (
        "units.yaml",
        1,
        "",
    )


# --- property -----------------------------------------------------------------

CELL = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    st.sampled_from(
        [
            "",
            "jilin",
            "changchun",
            "region",
            "county",
            "supervisor",
            "liaison",
            "+8613800000001",
            "a@example.org",
            "@",
            "x" * 70,
            "\n",
            '"',
            ",",
        ]
    ),  # fmt: skip
)
ROW = st.lists(CELL, min_size=0, max_size=8)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@settings(max_examples=100, deadline=None)
@given(units=st.lists(ROW, max_size=5), people=st.lists(ROW, max_size=5))
def test_arbitrary_csv_rows_raise_only_config_error(
    units: list[list[str]], people: list[list[str]]
) -> None:
    """Arbitrary CSV rows either load or raise ConfigError with located problems."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "units.csv").write_text(UNITS + _csv([], units).lstrip("\r\n"), encoding="utf-8")
        (folder / "people.csv").write_text(
            _csv(["id", "name", "unit", "role", "scope", "email", "mobile"], people),
            encoding="utf-8",
        )
        try:
            load_directory(folder)
        except ConfigError as exc:
            assert exc.problems
            assert all(isinstance(p, Problem) and p.file for p in exc.problems)
