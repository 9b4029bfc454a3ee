"""The numbers a setting may take: `Range`, and the ranges many settings share."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: finite, from `low` to `high`, and multiples of `step`."""

    low: float = -math.inf
    """Smallest value allowed."""
    high: float = math.inf
    """Largest value allowed."""
    low_excluded: bool = False
    """Whether `low` itself is refused (a learning rate must be above 0, not at it)."""
    step: int = 1
    """Values must be multiples of this (channel counts that layers split evenly)."""

    def problem(self, value: float) -> str | None:
        """What is wrong with `value` ('must be ...'), or None."""
        if isinstance(value, float) and not math.isfinite(value):  # ints are finite, and may be too big for a float
            return f"must be a finite number {self}".rstrip()
        below = value < self.low or (self.low_excluded and value == self.low)
        return f"must be {self}" if below or value > self.high or (self.step > 1 and value % self.step) else None

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if math.isfinite(self.low) and math.isfinite(self.high):
            bounds = f"in {'(' if self.low_excluded else '['}{low}, {high}]"
        elif math.isfinite(self.low):
            bounds = f"{'>' if self.low_excluded else '>='} {low}"
        else:
            bounds = f"<= {high}" if math.isfinite(self.high) else ""
        return f"a multiple of {self.step} {bounds}" if self.step > 1 else bounds


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(value)


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, low_excluded=True)
FRACTION, SHARE = Range(0, 1), Range(0, 1, low_excluded=True)  # a share of the data cannot be 0
