"""Number formatting for narrative sentences and the report: 3 significant figures, small values in e-notation."""

from __future__ import annotations


def num(value, signed: bool = False) -> str:
    """Numbers to 3 significant figures (tiny ones in scientific notation); strings as they are."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:+d}" if signed and not isinstance(value, bool) else str(value)
    sign = "+" if signed else ""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:{sign}.2e}"
    if abs(value) >= 1000:
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.3g}"


def signed(value) -> str:
    return num(value, signed=True)


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"
