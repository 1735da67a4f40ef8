"""How measured figures are written in tables and sentences: speedups as "×" with their CI, p-values, intervals.

One place for these so the audit, the report's tables and its summary say a figure the same
way: a 320-fold gain is "320× [290–350]", never "-100 %"; a p-value below 0.001 is "< 0.001".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["times", "speedup_text", "p_text", "interval", "mb"]


def times(value: float | None) -> str:
    """A factor such as 320× or 1.07× (more digits for small factors); '–' when missing."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "–"
    if value >= 100:
        return f"{value:,.0f}×"
    if value >= 10:
        return f"{value:.1f}×"
    return f"{value:.2f}×"


def speedup_text(ratio: float | None, ratio_ci: Sequence[float] | None = None) -> str:
    """``ratio`` = new/old median time written as a speedup (old/new) with its CI: '320× [290–350]'."""
    if ratio is None or not ratio > 0:
        return "–"
    text = times(1.0 / ratio)
    if ratio_ci and len(ratio_ci) == 2 and ratio_ci[0] and ratio_ci[1] and ratio_ci[0] > 0:
        lo, hi = 1.0 / float(ratio_ci[1]), 1.0 / float(ratio_ci[0])
        text += f" [{times(lo).rstrip('×')}–{times(hi)}]"
    return text


def p_text(p: float | None) -> str:
    """A p-value: '< 0.001' below a thousandth, else three decimals; '–' when missing."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def interval(pair: Sequence[float] | None, digits: int = 2, unit: str = "") -> str:
    """'[lo–hi]' with ``digits`` decimals (and a unit after it); '–' when missing."""
    if not pair or len(pair) != 2 or pair[0] is None or pair[1] is None:
        return "–"
    return f"[{float(pair[0]):,.{digits}f}–{float(pair[1]):,.{digits}f}{unit}]"


def mb(n_bytes: float | None) -> str:
    """Bytes as MB (2**20) with one decimal."""
    return "–" if n_bytes is None else f"{n_bytes / 2**20:,.1f} MB"
