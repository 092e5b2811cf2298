"""Small argument validators shared by configs, models and the command line (clear errors naming the argument)."""

from __future__ import annotations

import math

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "is_int", "is_num"]


def is_int(v: object) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_int(v: object, name: str, minimum: int | None = 1) -> int:
    """``v`` as an int >= ``minimum`` (None: any int), else ValueError naming ``name``."""
    if not is_int(v) or (minimum is not None and v < minimum):
        kind = "an int" if minimum is None else ("a positive int" if minimum == 1 else f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    return int(v)


def check_number(v: object, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``v`` as a finite float within the given bounds, else ValueError naming ``name`` (NaN and inf never pass)."""
    if not is_num(v) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo or '(-inf'}, {hi or 'inf)'}, got {v!r}")
    return v


def check_bool(v: object, name: str) -> bool:
    """``v`` if it is a bool, else TypeError naming ``name``."""
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {v!r}")
    return v


def check_choice(v: object, name: str, choices: tuple) -> object:
    """``v`` if it is one of ``choices``, else ValueError naming ``name`` and listing them."""
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")
    return v
