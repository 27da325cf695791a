"""Choosing limits so that every output of a grammar fits in a token budget.

Small models under a grammar tend to loop (a string that never ends, one more array item, one more key) until
``max_tokens`` cuts the JSON off. The cure here is static: under a budget of ``B`` tokens, the grammar is built so
that its *longest* output has at most ``B - 1`` characters (one token is kept for end-of-sequence). Every token
carries at least one character, so a generation that follows the grammar always closes its last bracket in time.

The rule: one scale ``t`` sets every open bound - strings without maxLength get at most ``t`` characters, arrays
and maps without maxItems ``t // 8`` entries, unbounded regex quantifiers ``t`` extra repetitions, integer parts
``1 + t // 4`` digits (up to 16), fractions ``t // 8`` digits (up to 15), recursion and free-form nesting
``1 + t // 32`` levels (up to 4); strings use no escapes and there is no indentation. ``t`` is the largest value
(binary search) whose longest output fits. Four shapes are tried in order - optional properties with one
optional space after ':' and ',', then without the spaces, then required properties only (with, then without
spaces) - and the first whose strings may reach 16 characters wins; otherwise the one with the longest strings.
Must not know: GBNF spelling, JSON Schema keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kaiyuan.chat.grammars import _ir as ir
from kaiyuan.chat.grammars._gbnf import RuleSet
from kaiyuan.chat.grammars._schema import Limits

_T_MAX = 4096
_SHORT_STRINGS = 16
_SHAPES = ((True, True), (True, False), (False, True), (False, False))  # (optional properties, spaces)

Build = Callable[[Limits], tuple[str, RuleSet]]


def limits_for(t: int, *, optional: bool, spaces: bool = True) -> Limits:
    return Limits(
        string=t,
        items=t // 8,
        pattern=t,
        int_digits=min(1 + t // 4, 16),
        fraction_digits=min(t // 8, 15),
        exponent=False,
        depth=min(1 + t // 32, 4),
        optional=optional,
        compact=True,
        spaces=spaces,
    )


@dataclass(frozen=True)
class Fitted:
    root: str
    rules: RuleSet
    t: int
    longest: int | None  # longest output in characters (None: unbounded or unsatisfiable)


def _measure(build: Build, t: int, optional: bool, spaces: bool) -> Fitted:
    root, rules = build(limits_for(t, optional=optional, spaces=spaces))
    if not ir.satisfiable(ir.Ref(root), rules.rules):
        return Fitted(root, rules, t, None)
    return Fitted(root, rules, t, ir.measure(ir.Ref(root), rules.rules).hi)


def _search(build: Build, chars: int, *, optional: bool, spaces: bool) -> Fitted | None:
    """The largest ``t`` whose grammar is satisfiable and whose longest output is at most ``chars``."""
    # Satisfiability only changes with the recursion depth (every 32 steps of t); find where it starts.
    first = None
    for t in range(0, 97, 32):
        found = _measure(build, t, optional, spaces)
        if found.longest is not None:
            first = found
            break
    if first is None or first.longest is None or first.longest > chars:
        return None
    best, lo, hi = first, first.t, _T_MAX
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = _measure(build, mid, optional, spaces)
        if found.longest is not None and found.longest <= chars:
            lo, best = mid, found
        else:
            hi = mid - 1
    return best


def fit(build: Build, budget_tokens: int) -> Fitted:
    """The grammar for the largest limits whose every output fits ``budget_tokens`` tokens."""
    chars = max(budget_tokens - 1, 1)
    candidates: list[Fitted] = []
    for optional, spaces in _SHAPES:
        found = _search(build, chars, optional=optional, spaces=spaces)
        if found is not None:
            if found.t >= _SHORT_STRINGS:
                return found
            candidates.append(found)
    if candidates:
        return max(candidates, key=lambda c: c.t)
    # Even the smallest document is longer than the budget: the tightest grammar; the cut-off is then reported.
    return _measure(build, 0, False, False)
