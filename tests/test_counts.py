"""The compact count table adds up exactly what a dict of counts would, in any row order."""

from __future__ import annotations

import random
from collections import Counter

from service.counts import CountTable

UNITS = [f"u{i}" for i in range(50)]
# Two obligations share a period name: the table keys on both.
OCCURRENCES = [("weekly-progress", f"2023-W{w}") for w in range(22, 27)] + [
    ("monthly-leads", "2023-06"),
    ("weekly-hazards", "2023-W22"),
]


def _rows(seed: int, n: int) -> list[tuple[str, str, str, int]]:
    rng = random.Random(seed)
    return [
        (rng.choice([*UNITS, "gone"]), *rng.choice(OCCURRENCES), rng.choice([1, 1, 2, 0, -1]))
        for _ in range(n)
    ]


def test_rows_in_any_order_add_up_like_a_dict() -> None:
    """Shuffled rows (occurrences interleaved, repeats, zero and negative counts, a unit no
    longer in the directory) give the dict's sums for every (unit, occurrence)."""
    index = {u: i for i, u in enumerate(UNITS)}
    for seed in range(5):
        rows = _rows(seed, 2_000)
        expected: Counter[tuple[str, str, str]] = Counter()
        for unit, ob, per, count in rows:
            if unit in index and count > 0:
                expected[(unit, ob, per)] += count
        table = CountTable(index)
        table.add_rows(rows[:700])
        table.add_rows(sorted(rows[700:], key=lambda r: r[1:3]))  # grouped, as from waves
        for unit in UNITS:
            for ob, per in OCCURRENCES:
                assert table.get((unit, ob, per)) == min(expected[(unit, ob, per)], 255)


def test_counts_are_clamped_at_255() -> None:
    """A count past a byte stays at 255 (quotas are single digits)."""
    table = CountTable({"u0": 0})
    table.add_rows([("u0", "o", "p", 200), ("u0", "o", "p", 100)])
    assert table.get(("u0", "o", "p")) == 255


def test_one_occurrence_as_two_columns_adds_up_like_rows() -> None:
    """Units and counts given as columns (a unit repeated, a removed unit, a zero) add up
    exactly as the same rows would."""
    index = {u: i for i, u in enumerate(UNITS)}
    units = ["u1", "u2", "u1", "gone", "u3", "u4"]
    counts = [1, 2, 1, 5, 0, -1]
    columns, rows = CountTable(index), CountTable(index)
    columns.add_occurrence("weekly-progress", "2023-W22", units, counts)
    rows.add_rows((u, "weekly-progress", "2023-W22", c) for u, c in zip(units, counts, strict=True))
    for unit in UNITS:
        key = (unit, "weekly-progress", "2023-W22")
        assert columns.get(key) == rows.get(key)
    assert columns.get(("u1", "weekly-progress", "2023-W22")) == 2


def test_an_occurrence_with_nothing_counted_has_no_row() -> None:
    """Only removed units or zero counts: the occurrence still reads as nobody submitted."""
    table = CountTable({u: i for i, u in enumerate(UNITS)})
    table.add_occurrence("weekly-progress", "2023-W22", ["gone", "u1"], [3, 0])
    assert table.row("weekly-progress", "2023-W22")[0] is None
