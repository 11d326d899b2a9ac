"""Rows of the result table: medians over repetitions, ours/raw ratio, target, spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """Median of the values that are numbers; NaN when none is."""
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def spread(values: Sequence[float]) -> float:
    """Noise between repetitions: (max - min) / median, as a fraction; NaN under 2 values."""
    clean = [v for v in values if not math.isnan(v)]
    if len(clean) < 2:
        return math.nan
    middle = statistics.median(clean)
    return (max(clean) - min(clean)) / abs(middle) if middle else math.nan


@dataclass(frozen=True)
class Target:
    """What the issue asks of a row: a bound on ours/raw, or on ours alone."""

    kind: str  # "ratio>=", "ratio<=", "ours<="
    bound: float

    def met(self, ours: float, ratio: float) -> bool | None:
        """Whether the bound holds; None when there is nothing to compare."""
        value = ours if self.kind == "ours<=" else ratio
        if math.isnan(value):
            return None
        return value >= self.bound if self.kind == "ratio>=" else value <= self.bound

    def describe(self, unit: str) -> str:
        """The target as the table prints it."""
        if self.kind == "ours<=":
            return f"ours <= {_number(self.bound)} {unit}"
        return f"ratio {self.kind[5:]} {_number(self.bound)}"


@dataclass
class Row:
    """One line of the table. ``ours`` is the platform's value (or a peer's, in section 7)."""

    key: str
    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""

    @property
    def ours_median(self) -> float:
        """Median of ours (or the peer's) over the repetitions."""
        return median(self.ours)

    @property
    def raw_median(self) -> float:
        """Median of raw Celery over the repetitions."""
        return median(self.raw)

    @property
    def ratio(self) -> float:
        """ours / raw of the medians; NaN without both."""
        ours, raw = self.ours_median, self.raw_median
        if math.isnan(ours) or math.isnan(raw) or raw == 0:
            return math.nan
        return ours / raw

    @property
    def met(self) -> bool | None:
        """Whether the bound holds; None when there is nothing to compare."""
        return self.target.met(self.ours_median, self.ratio) if self.target else None

    def shortfall(self) -> str:
        """By how much a missed target is missed, in words ("" when met or without target)."""
        if self.met is not False:
            return ""
        value = self.ours_median if self.target.kind == "ours<=" else self.ratio
        bound = self.target.bound
        if self.target.kind == "ratio>=":
            return f"{(1 - value / bound) * 100:.0f}% below the target"
        if bound == 0:
            return f"{_number(value)} where the target is 0"
        return f"{(value / bound - 1) * 100:.0f}% above the target"

    def as_dict(self) -> dict:
        """The row as JSON-able data (``--json``)."""
        return {
            "key": self.key,
            "name": self.name,
            "unit": self.unit,
            "ours": self.ours,
            "raw": self.raw,
            "ours_median": self.ours_median,
            "raw_median": self.raw_median,
            "ratio": self.ratio,
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met,
            "note": self.note,
        }


def _number(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 100:.0f}%"


HEADERS = ("#", "row", "unit", "ours", "raw", "ours/raw", "target", "met", "spread ours/raw", "n")


def render(rows: Sequence[Row]) -> str:
    """The table as Markdown (readable in a terminal, pasteable into bench/README.md)."""
    lines = []
    for row in rows:
        met = {True: "yes", False: "**NO**", None: "-"}[row.met]
        lines.append(
            (
                row.key,
                row.name,
                row.unit,
                _number(row.ours_median),
                _number(row.raw_median) if row.raw else "n/a",
                _number(row.ratio) if row.raw else "-",
                row.target.describe(row.unit) if row.target else "-",
                met,
                f"{_percent(spread(row.ours))}/{_percent(spread(row.raw))}",
                f"{len(row.ours)}/{len(row.raw)}",
            )
        )
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(HEADERS, *lines, strict=True)
    ]
    out = [_line(HEADERS, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [_line(cells, widths) for cells in lines]
    notes = [f"- {row.key}: {row.note}" for row in rows if row.note]
    missed = [f"- {row.key} {row.name}: {row.shortfall()}" for row in rows if row.met is False]
    if notes:
        out += ["", "Notes:", *notes]
    if missed:
        out += ["", "Missed targets:", *missed]
    return "\n".join(out)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
