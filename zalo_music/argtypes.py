"""argparse value types with their range in the message, shared by the sub-commands' parsers, and the one way
user text is printed to a terminal."""

from __future__ import annotations

import argparse
import math
import typing as tp


def number(kind: tp.Callable[[str], tp.Any], low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> tp.Callable[[str], tp.Any]:
    """An argparse `type` that parses `kind` and checks the range, with a message naming the bounds."""
    def parse(text: str) -> tp.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {' and '.join(x for x in (lo, hi) if x)}")
        return value
    parse.__name__ = kind.__name__
    return parse


#: Integers >= 1, floats > 0.
POSITIVE_INT = number(int, 1)
POSITIVE_FLOAT = number(float, 0, low_open=True)


def printable(text: str) -> str:
    """`text` with control characters escaped as repr() escapes them (the rest, accents included, kept)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
