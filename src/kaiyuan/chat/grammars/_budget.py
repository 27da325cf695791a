"""Choosing limits so that every output of a grammar fits in a token budget.

Small models under a grammar tend to loop (a string that never ends, one more array item, one more key) until
``max_tokens`` cuts the JSON off. The cure here is static: under a budget of ``B`` tokens, the grammar is built so
that its *longest* output has at most ``B - 1`` characters (one token is kept for end-of-sequence). Every token
carries at least one character, so a generation that follows the grammar always closes its last bracket in time.

The rule: one scale ``t`` sets every open bound — strings without maxLength get at most ``t`` characters, arrays
and maps without maxItems ``t // 8`` entries (at least 1 from t = 8), unbounded regex quantifiers ``t`` extra
repetitions, integer parts ``1 + t // 4`` digits (up to 16), fractions ``t // 8`` digits (up to 15), recursion
and free-form nesting ``1 + t // 32`` levels (up to 4); whitespace is one optional space after ':' and ',';
strings use no escapes. ``t`` is the largest value (binary search) whose longest output fits. When that leaves
strings shorter than 16 characters, optional properties are dropped if that buys a larger ``t``.
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

Build = Callable[[Limits], tuple[str, RuleSet]]


def limits_for(t: int, *, optional: bool) -> Limits:
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
    )


@dataclass(frozen=True)
class Fitted:
    root: str
    rules: RuleSet
    limits: Limits
    longest: int | None  # longest output in characters (None: unbounded)
    fits: bool


def _measure(build: Build, limits: Limits) -> Fitted:
    root, rules = build(limits)
    span = ir.measure(ir.Ref(root), rules.rules)
    ok = ir.satisfiable(ir.Ref(root), rules.rules)
    longest = span.hi if ok else None
    return Fitted(root, rules, limits, longest, False)


def _search(build: Build, chars: int, *, optional: bool) -> Fitted | None:
    """The largest ``t`` whose grammar is satisfiable and whose longest output is at most ``chars``."""

    def fits(t: int) -> Fitted | None:
        result = _measure(build, limits_for(t, optional=optional))
        if result.longest is not None and result.longest <= chars:
            return Fitted(result.root, result.rules, result.limits, result.longest, True)
        return None

    # The smallest satisfiable t: satisfiability only changes with the recursion depth (every 32 steps).
    start = None
    for t in range(0, 129, 32):
        if fits(t) is not None or _measure(build, limits_for(t, optional=optional)).longest is not None:
            start = t
            break
    if start is None:
        return None
    best = fits(start)
    if best is None:
        return None
    lo, hi = start, _T_MAX
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = fits(mid)
        if found is not None:
            lo, best = mid, found
        else:
            hi = mid - 1
    return best


def fit(build: Build, budget_tokens: int) -> Fitted:
    """The grammar for the largest limits whose every output fits ``budget_tokens`` tokens."""
    chars = max(budget_tokens - 1, 1)
    with_optional = _search(build, chars, optional=True)
    if (
        with_optional is not None
        and with_optional.limits.string is not None
        and with_optional.limits.string >= _SHORT_STRINGS
    ):
        return with_optional
    required_only = _search(build, chars, optional=False)
    candidates = [c for c in (with_optional, required_only) if c is not None]
    if candidates:
        return max(candidates, key=lambda c: c.limits.string or 0)
    # Even the smallest document is longer than the budget: give the tightest grammar; the cut-off is reported.
    smallest = _measure(build, limits_for(0, optional=False))
    return smallest
