"""Numbers for people: sizes, rates and durations the way every output of ``sanaa-mem`` writes them.

One place, so the live view, the plain lines, the summaries and the HTML report say the same thing the same
way: binary units (KiB, MiB, GiB), a sign on rates, no e-notation.
"""

from __future__ import annotations

import math

__all__ = ["duration", "rate", "size"]

_UNITS = (("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0))


def size(n: float | None) -> str:
    """``12.3 MiB``, ``800 B``; ``-`` for None or a non-finite value."""
    if n is None or not math.isfinite(n):
        return "-"
    value = abs(n)
    sign = "-" if n < 0 else ""
    for unit, scale in _UNITS:
        if value >= scale:
            return f"{sign}{value / scale:,.1f} {unit}"
    return f"{sign}{value:,.0f} B"


def rate(bytes_per_second: float | None) -> str:
    """``+12.3 KiB/s``, ``-800 B/s``; ``-`` for None or a non-finite value."""
    if bytes_per_second is None or not math.isfinite(bytes_per_second):
        return "-"
    sign = "+" if bytes_per_second >= 0 else "-"
    return sign + size(abs(bytes_per_second)) + "/s"


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``; ``-`` for None or a non-finite value."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"
