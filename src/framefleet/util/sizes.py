"""`format_bytes`: how framefleet writes a size for people, in decimal SI units (1 kB = 1000 B).

The report uses it; the dashboard's `bytes()` (service/dashboard/static/dashboard.js) does the same
arithmetic, so both write the same text for the same count.
"""

from __future__ import annotations

import math

UNITS = ("B", "kB", "MB", "GB", "TB")


def format_bytes(count: int) -> str:
    """`count` bytes as "512 B", "12.0 kB", "3.4 MB": whole bytes, else one decimal (halves round up)."""
    if count < 1000:
        return f"{count} B"
    value, unit = count / 1000, 1
    while _tenths(value) >= 1000 and unit < len(UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{_tenths(value):.1f} {UNITS[unit]}"


def _tenths(value: float) -> float:
    """`value` rounded to one decimal, halves up (as JavaScript's `Math.floor(v * 10 + 0.5) / 10`)."""
    return math.floor(value * 10 + 0.5) / 10
