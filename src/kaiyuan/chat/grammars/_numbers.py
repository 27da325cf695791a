"""Grammar trees for JSON integers and numbers, optionally within bounds.

Owns: digit-by-digit range construction (every integer in [lo, hi] and nothing else), numbers whose value lies
in an interval, and the digit limits that keep a number from growing without end.
Must not know: JSON Schema keywords, GBNF spelling.

Bounds on numbers are enforced exactly when they are whole numbers. A fractional bound is narrowed to the
whole number inside it (``minimum: 0.5`` generates values from 1 up), which keeps every output valid; when that
leaves nothing (``0.1 ≤ x ≤ 0.9``) the caller is told via ``None``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

from kaiyuan.chat.grammars import _ir as ir

DIGIT = ir.Chars(((0x30, 0x39),))
NONZERO = ir.Chars(((0x31, 0x39),))

# Longer integers lose precision as IEEE doubles in most JSON parsers; no sensible answer needs more.
MAX_INT_DIGITS = 16
MAX_FRACTION_DIGITS = 15


def _digits(lo: int, hi: int) -> ir.Node:
    return ir.Chars(((0x30 + lo, 0x30 + hi),))


def _same_length(x: str, y: str) -> ir.Node:
    """Digit strings of the same length between ``x`` and ``y`` (inclusive)."""
    if x == y:
        return ir.lit(x)
    if len(x) == 1:
        return _digits(int(x), int(y))
    dx, dy, rx, ry = int(x[0]), int(y[0]), x[1:], y[1:]
    if dx == dy:
        return ir.seq(ir.lit(x[0]), _same_length(rx, ry))
    n = len(rx)
    parts: list[ir.Node] = []
    first_full = dx
    if rx != "0" * n:
        parts.append(ir.seq(ir.lit(x[0]), _same_length(rx, "9" * n)))
        first_full = dx + 1
    last_full = dy if ry == "9" * n else dy - 1
    if first_full <= last_full:
        parts.append(ir.seq(_digits(first_full, last_full), ir.rep(DIGIT, n, n)))
    if ry != "9" * n:
        parts.append(ir.seq(ir.lit(y[0]), _same_length("0" * n, ry)))
    return ir.alt(*parts)


@lru_cache(maxsize=512)
def natural_range(lo: int, hi: int | None, *, max_digits: int = MAX_INT_DIGITS) -> ir.Node:
    """Decimal integers ``lo <= n <= hi`` without sign or leading zeros (``hi`` None: up to ``max_digits``)."""
    if lo < 0 or (hi is not None and hi < lo):
        return ir.NEVER
    top_len = len(str(hi)) if hi is not None else max(max_digits, len(str(lo)))
    parts: list[ir.Node] = []
    for length in range(len(str(lo)), top_len + 1):
        start = max(lo, 10 ** (length - 1) if length > 1 else 0)
        end = 10**length - 1 if hi is None else min(hi, 10**length - 1)
        if start <= end:
            parts.append(_same_length(str(start), str(end)))
    return ir.alt(*parts)


@lru_cache(maxsize=512)
def integer_range(lo: int | None, hi: int | None, *, max_digits: int = MAX_INT_DIGITS) -> ir.Node:
    """JSON integers in ``[lo, hi]`` (None: unbounded on that side, limited to ``max_digits`` digits)."""
    parts: list[ir.Node] = []
    if hi is None or hi >= 0:
        parts.append(natural_range(max(lo or 0, 0), hi, max_digits=max_digits))
    if lo is None or lo < 0:
        smallest = 1 if hi is None or hi >= 0 else -hi
        largest = None if lo is None else -lo
        parts.append(ir.seq(ir.lit("-"), natural_range(smallest, largest, max_digits=max_digits)))
    return ir.alt(*parts)


@lru_cache(maxsize=512)
def unbounded_number(*, int_digits: int, fraction_digits: int, exponent: bool) -> ir.Node:
    """Any JSON number with at most the given digit counts."""
    integer = ir.alt(ir.lit("0"), ir.seq(NONZERO, ir.rep(DIGIT, 0, max(int_digits - 1, 0))))
    fraction = ir.opt(ir.seq(ir.lit("."), ir.rep(DIGIT, 1, fraction_digits))) if fraction_digits else ir.EMPTY
    exp = (
        ir.opt(
            ir.seq(
                ir.Chars(((0x45, 0x45), (0x65, 0x65))),
                ir.opt(ir.Chars(((0x2B, 0x2B), (0x2D, 0x2D)))),
                ir.rep(DIGIT, 1, 2),
            )
        )
        if exponent
        else ir.EMPTY
    )
    return ir.seq(ir.opt(ir.lit("-")), integer, fraction, exp)


def _nonzero_fraction(digits: int) -> ir.Node:
    """A fraction part whose value is not zero: '.' then up to ``digits`` digits, the last one non-zero."""
    return ir.seq(ir.lit("."), ir.rep(DIGIT, 0, digits - 1), NONZERO)


@lru_cache(maxsize=512)
def bounded_number(
    lo: Fraction | None,
    lo_exclusive: bool,
    hi: Fraction | None,
    hi_exclusive: bool,
    *,
    int_digits: int,
    fraction_digits: int,
) -> ir.Node | None:
    """JSON numbers ``x`` with ``lo <(=) x <(=) hi``; None when no whole-number-precision value fits."""
    # Whole numbers that satisfy both bounds.
    int_lo = None if lo is None else (math.floor(lo) + 1 if lo_exclusive else math.ceil(lo))
    int_hi = None if hi is None else (math.ceil(hi) - 1 if hi_exclusive else math.floor(hi))
    parts: list[ir.Node] = []
    if int_lo is None or int_hi is None or int_lo <= int_hi:
        parts.append(integer_range(int_lo, int_hi, max_digits=int_digits))
    if fraction_digits:
        # I.fff lies strictly between I and I+1, so it fits whenever [I, I+1] lies inside the closed bounds.
        frac = _nonzero_fraction(fraction_digits)
        pos_lo = 0 if lo is None else max(0, math.ceil(lo))
        pos_hi = None if hi is None else math.floor(hi) - 1
        if pos_hi is None or pos_lo <= pos_hi:
            parts.append(ir.seq(natural_range(pos_lo, pos_hi, max_digits=int_digits), frac))
        # -I.fff lies strictly between -(I+1) and -I.
        neg_lo = 0 if hi is None else max(0, math.ceil(-hi))
        neg_hi = None if lo is None else math.floor(-lo) - 1
        if neg_hi is None or neg_lo <= neg_hi:
            parts.append(ir.seq(ir.lit("-"), natural_range(neg_lo, neg_hi, max_digits=int_digits), frac))
    node = ir.alt(*parts)
    return None if ir.is_never(node) else node
