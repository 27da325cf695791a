"""Choosing limits so that every output of a grammar fits in a token budget.

Small models under a grammar tend to loop (a string that never ends, one more array item, one more key) until
``max_tokens`` cuts the JSON off. The cure here is static: under a budget of ``B`` tokens, the grammar is built so
that its *longest* output has at most ``B - 1`` characters (one token is kept for end-of-sequence). Every token
carries at least one character, so a generation that follows the grammar always closes its last bracket in time.

The rule: one scale ``t`` sets every open bound - strings without maxLength get at most ``t`` characters, arrays
and maps without maxItems ``t // 8`` entries, regex quantifiers at most ``t`` repetitions beyond their minimum,
integer parts ``1 + t // 4`` digits (up to 16), fractions ``t // 8`` digits (up to 15), recursion and free-form
nesting ``1 + t // 32`` levels (up to 4); strings use no escapes and there is no indentation. ``t`` is the largest
value (binary search) whose longest output fits. The shape around it is tried from generous to tight: every
optional property allowed, then at most 4, 2, 1 and 0 optional properties per object, each first with one
optional space after ':' and ',' and then without. The first shape whose strings may reach 16 characters wins;
if none does, the one with the longest strings.
Must not know: GBNF spelling, JSON Schema keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kaiyuan.chat.grammars import _ir as ir
from kaiyuan.chat.grammars._gbnf import RuleSet
from kaiyuan.chat.grammars._schema import Limits

_T_MAX = 4096
_GOOD_STRINGS = 16
# (optional properties per object, spaces, recursion depth and items per array: None for 1 + t // 32 and t // 8)
Shape = tuple[int | None, bool, int | None, int | None]
_SHAPES: tuple[Shape, ...] = tuple(
    (cap, spaces, None, None) for cap in (None, 4, 2, 1, 0) for spaces in (True, False)
)
# A recursive schema first tries these (depth, items) pairs, deepest first, with strings of _RECURSIVE_STRINGS
_RECURSION = ((4, 2), (3, 2), (2, 2))
_RECURSIVE_STRINGS = 24

Build = Callable[[Limits], tuple[str, RuleSet]]


def limits_for(
    t: int,
    *,
    max_optional: int | None,
    spaces: bool = True,
    depth: int | None = None,
    items: int | None = None,
) -> Limits:
    return Limits(
        string=t,
        items=t // 8 if items is None else items,
        pattern=t,
        int_digits=min(1 + t // 4, 16),
        fraction_digits=min(t // 8, 15),
        exponent=False,
        depth=min(1 + t // 32, 4) if depth is None else depth,
        max_optional=max_optional,
        compact=True,
        spaces=spaces,
    )


@dataclass(frozen=True)
class Fitted:
    root: str
    rules: RuleSet
    t: int
    longest: int | None  # longest output in characters (None: unbounded or unsatisfiable)


def _measure(build: Build, t: int, shape: Shape, cost: Callable[[str], int]) -> Fitted:
    cap, spaces, depth, items = shape
    root, rules = build(limits_for(t, max_optional=cap, spaces=spaces, depth=depth, items=items))
    if not ir.satisfiable(ir.Ref(root), rules.rules):
        return Fitted(root, rules, t, None)
    return Fitted(root, rules, t, ir.measure(ir.Ref(root), rules.rules, cost).hi)


def _fits(found: Fitted, chars: int) -> bool:
    return found.longest is not None and found.longest <= chars


def _largest(
    build: Build, chars: int, shape: Shape, good: Fitted, top: int, cost: Callable[[str], int]
) -> Fitted:
    """Binary search for the largest ``t`` in [good.t, top] that fits, ``good`` being known to fit."""
    lo, hi = good.t, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = _measure(build, mid, shape, cost)
        if _fits(found, chars):
            lo, good = mid, found
        else:
            hi = mid - 1
    return good


def fit(
    build: Build, budget_tokens: int, *, recursive: bool = False, cost: Callable[[str], int] = len
) -> Fitted:
    """The grammar for the largest limits whose every output fits ``budget_tokens`` tokens (``recursive``: the
    schema has ``$ref`` cycles, whose depth is preferred to longer strings and more items; ``cost``: what a
    literal costs, its characters unless it is written as the model's tokens)."""
    chars = max(budget_tokens - 1, 1)
    if recursive:
        for cap, spaces, _, _ in _SHAPES:
            for depth, items in _RECURSION:
                shape: Shape = (cap, spaces, depth, items)
                found = _measure(build, _RECURSIVE_STRINGS, shape, cost)
                if _fits(found, chars):
                    return _largest(build, chars, shape, found, _T_MAX, cost)
    # The first shape in which strings of _GOOD_STRINGS characters fit, grown as far as the budget allows.
    for shape in _SHAPES:
        found = _measure(build, _GOOD_STRINGS, shape, cost)
        if _fits(found, chars):
            return _largest(build, chars, shape, found, _T_MAX, cost)
    # No shape fits that: the shape with the largest t below it. (A recursive schema may need more depth, i.e.
    # a larger t, before it has any finite document at all; then nothing smaller fits either.)
    best: Fitted | None = None
    for shape in _SHAPES:
        found = _measure(build, 0, shape, cost)
        if _fits(found, chars) and (best is None or best.t < _GOOD_STRINGS - 1):
            found = _largest(build, chars, shape, found, _GOOD_STRINGS - 1, cost)
            if best is None or found.t > best.t:
                best = found
    if best is not None:
        return best
    # Even the smallest document is longer than the budget: the tightest grammar; the cut-off is then reported.
    return _measure(build, 0, (0, False, None, None), cost)
