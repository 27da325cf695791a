"""Sets of Unicode code points, and how one character of such a set is written inside a JSON string.

Owns: the range arithmetic (union, complement, intersection) used by the regex translator and the string rules,
and the JSON encoding of a set (``"`` and ``\\`` need a backslash, control characters an escape).
Must not know: JSON Schema, GBNF text, budgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

Ranges = tuple[tuple[int, int], ...]
"""Sorted, disjoint, non-adjacent inclusive code point ranges."""

MAX_CODE_POINT = 0x10FFFF
SURROGATES = ((0xD800, 0xDFFF),)

# Characters JSON needs to escape inside a string, with their short escapes (RFC 8259 §7).
_SHORT_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sort and merge overlapping or adjacent ranges; drop empty ones."""
    items = sorted((lo, hi) for lo, hi in ranges if lo <= hi)
    merged: list[tuple[int, int]] = []
    for lo, hi in items:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def of_chars(chars: str) -> Ranges:
    """The set of the given characters."""
    return normalize((ord(c), ord(c)) for c in chars)


def union(*sets: Ranges) -> Ranges:
    return normalize(r for s in sets for r in s)


@lru_cache(maxsize=4096)
def complement(ranges: Ranges) -> Ranges:
    """All Unicode scalar values (surrogates excluded) not in ``ranges``."""
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in normalize((*ranges, *SURROGATES)):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return tuple(out)


@lru_cache(maxsize=4096)
def intersect(a: Ranges, b: Ranges) -> Ranges:
    return complement(union(complement(a), complement(b)))


@lru_cache(maxsize=4096)
def subtract(a: Ranges, b: Ranges) -> Ranges:
    return intersect(a, complement(b))


def contains(ranges: Ranges, code_point: int) -> bool:
    return any(lo <= code_point <= hi for lo, hi in ranges)


def size(ranges: Ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def json_escape_char(code_point: int) -> str:
    """How one character is written inside a JSON string (the shortest form)."""
    if code_point in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[code_point]
    if code_point < 0x20:
        return f"\\u{code_point:04x}"
    return chr(code_point)


def json_string_body(text: str) -> str:
    """``text`` as it appears between the quotes of a JSON string."""
    return "".join(json_escape_char(ord(c)) for c in text)


NEEDS_ESCAPE: Ranges = normalize([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
"""Characters that cannot appear raw inside a JSON string."""


@lru_cache(maxsize=4096)
def split_for_json(ranges: Ranges) -> tuple[Ranges, tuple[str, ...]]:
    """Split a set into the part written raw and the escape sequences for the rest (one string per character)."""
    raw = subtract(ranges, NEEDS_ESCAPE)
    escaped = tuple(
        json_escape_char(cp) for lo, hi in intersect(ranges, NEEDS_ESCAPE) for cp in range(lo, hi + 1)
    )
    return raw, escaped


# ASCII classes. Positive shorthands (\d, \w, \s) use these: what they match is matched by ECMA-262 and by
# Python's re (which jsonschema uses), so a generated string satisfies the pattern under both readings.
DIGIT: Ranges = ((0x30, 0x39),)
WORD: Ranges = normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
SPACE: Ranges = normalize([(0x09, 0x0D), (0x20, 0x20)])
PRINTABLE_ASCII: Ranges = ((0x20, 0x7E),)
# CJK Unified Ideographs: letters for Python's \w, never digits or spaces.
CJK: Ranges = ((0x4E00, 0x9FFF),)
