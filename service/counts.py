"""A compact table of submission counts: one bytearray per occurrence.

A national campaign has ~100,000 units × ~20 occurrences; a dict keyed by
``(unit, obligation, period)`` tuples would take hundreds of megabytes. Counts above 255
are clamped (quotas are single digits). Reads use the same ``get`` as a plain dict, so
the planner and status code accept either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class CountTable:
    def __init__(self, unit_index: Mapping[str, int]) -> None:
        self._index = unit_index
        self._size = len(unit_index)
        self._by_occurrence: dict[tuple[str, str], bytearray] = {}

    def add(self, unit: str, obligation: str, period: str, count: int) -> None:
        """Add one submission's count (clamped at 255)."""
        self.add_rows(((unit, obligation, period, count),))

    def add_rows(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        """:meth:`add` for many (unit, obligation, period, count) rows; repeats add up."""
        index, table, size = self._index, self._by_occurrence, self._size
        for unit, obligation, period, count in rows:  # ~10^6 rows nationally: kept lean
            i = index.get(unit)
            if i is None or count <= 0:
                continue  # a unit removed from the directory no longer owes anything
            key = (obligation, period)
            row = table.get(key)
            if row is None:
                row = table[key] = bytearray(size)
            value = row[i] + count
            row[i] = value if value < 256 else 255

    def add_occurrence(
        self, obligation: str, period: str, units: Sequence[str], counts: Sequence[int]
    ) -> None:
        """:meth:`add_rows` for one occurrence's rows given as two columns (``units[k]``
        submitted ``counts[k]``; a unit may repeat and its counts add up)."""
        index = self._index
        row = self._by_occurrence.get((obligation, period))
        for unit, count in zip(units, counts, strict=True):
            i = index.get(unit)
            if i is None or count <= 0:
                continue  # a unit removed from the directory no longer owes anything
            if row is None:
                row = self._by_occurrence[(obligation, period)] = bytearray(self._size)
            value = row[i] + count
            row[i] = value if value < 256 else 255

    def get(self, key: tuple[str, str, str], default: int = 0) -> int:
        unit, obligation, period = key
        row = self._by_occurrence.get((obligation, period))
        if row is None:
            return default
        i = self._index.get(unit)
        return default if i is None else row[i] or default

    def row(self, obligation: str, period: str) -> tuple[bytearray | None, Mapping[str, int]]:
        """(counts by unit position or None if nobody submitted, unit -> position).

        For loops over every unit of one occurrence (the planner), instead of a ``get``
        per unit.
        """
        return self._by_occurrence.get((obligation, period)), self._index

    def __len__(self) -> int:
        return sum(sum(1 for v in row if v) for row in self._by_occurrence.values())
