"""How every measured figure is written: numbers, CIs, ratios (×), p-values, milliseconds, MB, percentages.

One module decides this so the report, the notebooks, the CLI and the audit say a figure the
same way (asv keeps its number formatting in one ``util`` module too):

- a missing value is "–";
- a confidence interval is ``[lo–hi]`` (an en dash, the unit inside the brackets when it has one);
- a factor is "320×" or "1.07×", and a speedup carries its CI: "320× [290–350×]", never "-100 %";
- a p-value below 0.001 is "< 0.001", else three decimals;
- milliseconds have 3 decimals below 1 ms and 2 from 1 ms up (a CI follows its point estimate);
- sizes are MB of 2**20 bytes with 2 decimals, always;
- shares are percentages with one decimal and a space before "%": "85.3 %".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DASH",
    "number",
    "interval",
    "times",
    "times_ci",
    "speedup_text",
    "p_text",
    "ms",
    "ms_ci",
    "mb",
    "mb_number",
    "percent",
    "percent_ci",
    "signed_percent",
    "seconds",
]

#: What a missing figure is written as.
DASH = "–"
_MB = 2**20


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value: Any, digits: int = 2) -> str:
    """A table cell: ints with thousands separators, floats with ``digits`` decimals, bools yes/no, '–' if missing."""
    if _missing(value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _pair(pair: Sequence[float | None] | None) -> tuple[float, float] | None:
    if not pair or len(pair) != 2 or _missing(pair[0]) or _missing(pair[1]):
        return None
    return float(pair[0]), float(pair[1])  # type: ignore[arg-type]


def interval(pair: Sequence[float | None] | None, digits: int = 2, unit: str = "") -> str:
    """A confidence interval as '[lo–hi]' with ``digits`` decimals (``unit`` inside: '[1.2–3.4 ms]'); '–' if missing."""
    bounds = _pair(pair)
    if bounds is None:
        return DASH
    return f"[{bounds[0]:,.{digits}f}–{bounds[1]:,.{digits}f}{' ' + unit if unit else ''}]"


def times(value: float | None) -> str:
    """A factor such as 320× or 1.07× (more digits for small factors); '–' when missing."""
    if value is None or not math.isfinite(value) or value <= 0:
        return DASH
    if value >= 100:
        return f"{value:,.0f}×"
    if value >= 10:
        return f"{value:.1f}×"
    return f"{value:.2f}×"


def times_ci(value: float | None, pair: Sequence[float | None] | None = None) -> str:
    """A factor with its CI: '1.35× [1.20–1.52×]' (the CI left out when missing)."""
    text = times(value)
    bounds = _pair(pair)
    if text != DASH and bounds is not None and bounds[0] > 0 and bounds[1] > 0:
        text += f" [{times(bounds[0]).rstrip('×')}–{times(bounds[1])}]"
    return text


def speedup_text(ratio: float | None, ratio_ci: Sequence[float | None] | None = None) -> str:
    """``ratio`` = new/old median time written as a speedup (old/new) with its CI: '320× [290–350×]'."""
    if ratio is None or not ratio > 0:
        return DASH
    bounds = _pair(ratio_ci)
    inverted = (1.0 / bounds[1], 1.0 / bounds[0]) if bounds is not None and bounds[0] > 0 and bounds[1] > 0 else None
    return times_ci(1.0 / ratio, inverted)


def p_text(p: float | None) -> str:
    """A p-value: '< 0.001' below a thousandth, else three decimals; '–' when missing."""
    if _missing(p):
        return DASH
    assert p is not None
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ms_digits(value: float) -> int:
    return 3 if abs(value) < 1 else 2


def ms(value: float | None) -> str:
    """Milliseconds without the unit (for a column headed 'ms'): 3 decimals below 1 ms, 2 from 1 ms up."""
    if _missing(value):
        return DASH
    assert value is not None
    return f"{value:,.{_ms_digits(value)}f}"


def ms_ci(value: float | None, pair: Sequence[float | None] | None) -> str:
    """Milliseconds with their CI, both bounds at the point estimate's decimals: '0.052 [0.050–0.055]'."""
    if _missing(value):
        return DASH
    assert value is not None
    bounds = interval(pair, _ms_digits(value))
    return ms(value) if bounds == DASH else f"{ms(value)} {bounds}"


def mb_number(n_bytes: float | None) -> str:
    """Bytes as MB (2**20) with 2 decimals, without the unit (for a column headed 'MB')."""
    return DASH if _missing(n_bytes) else f"{n_bytes / _MB:,.2f}"  # type: ignore[operator]


def mb(n_bytes: float | None) -> str:
    """Bytes as MB (2**20) with 2 decimals and the unit: '152.34 MB'."""
    return DASH if _missing(n_bytes) else f"{mb_number(n_bytes)} MB"


def percent(share: float | None, digits: int = 1) -> str:
    """A share (0.853) as a percentage: '85.3 %'; '–' when missing."""
    if _missing(share):
        return DASH
    assert share is not None
    return f"{100 * share:.{digits}f} %"


def percent_ci(pair: Sequence[float | None] | None, digits: int = 1) -> str:
    """A CI of a share as '[80.1–90.2 %]'; '–' when missing."""
    bounds = _pair(pair)
    if bounds is None:
        return DASH
    return interval((100 * bounds[0], 100 * bounds[1]), digits, "%")


def signed_percent(value: float | None) -> str:
    """A change already in percent, with its sign: '+12 %', '-48 %'; '–' when missing."""
    return DASH if _missing(value) else f"{value:+.0f} %"


def seconds(value: float | None, digits: int = 0) -> str:
    """Seconds without the unit (for a column headed 's'): '1,800'; '–' when missing."""
    return DASH if _missing(value) else f"{value:,.{digits}f}"
