"""Pure statistics for the benchmark table: medians with min-max, ratios, target verdicts.

A measurement (as `bench.inside` writes it to JSON) is a mapping with either
``samples`` (a list of numbers, milliseconds unless said otherwise) or ``error``
(why the contender could not be measured). Nothing here does I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Measurement = Mapping[str, Any]


@dataclass(frozen=True)
class Summary:
    """Median and range of repeated samples."""

    count: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(len(samples), statistics.median(samples), min(samples), max(samples))


def summary(measurement: Measurement | None, key: str = "samples") -> Summary | None:
    """The summary of `measurement[key]`, or None when it failed or was not measured."""
    if not measurement or measurement.get("error") or not measurement.get(key):
        return None
    return Summary.of([float(value) for value in measurement[key]])


def median(measurement: Measurement | None, key: str = "samples") -> float | None:
    found = summary(measurement, key)
    return None if found is None else found.median


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def number(value: float) -> str:
    """Three significant digits at most, no exponent: 0.412, 4.12, 41.2, 412, 4120."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    decimals = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:.{decimals}f}"


def cell(found: Summary | None, unit: str = "ms") -> str:
    """``412 ms (398-450)``; a single sample has no range; missing is ``-``."""
    if found is None:
        return "-"
    text = f"{number(found.median)} {unit}".rstrip()
    if found.count > 1:
        text += f" ({number(found.low)}-{number(found.high)})"
    return text


def ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass(frozen=True)
class Verdict:
    """One target of the issue, what was measured against it, and whether it is met
    (None: could not be decided because a number is missing)."""

    target: str
    measured: str
    met: bool | None

    @property
    def mark(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


def at_most(
    target: str, value: float | None, limit: float | None, shown: str | None = None
) -> Verdict:
    """A verdict `value <= limit`; `shown` describes the value (default: the number)."""
    if value is None or limit is None:
        return Verdict(target, shown or "not measured", None)
    return Verdict(target, shown or number(value), value <= limit)


def all_of(target: str, parts: Sequence[Verdict]) -> Verdict:
    """A verdict that is met when every part is: missed if any part missed."""
    measured = "; ".join(part.measured for part in parts)
    marks = [part.met for part in parts]
    met = False if False in marks else None if None in marks else True
    return Verdict(target, measured, met)
