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


Probes = dict[
    tuple[int, Shape], "int | None"
]  # (t, shape) → longest output (None: unbounded or unsatisfiable)


class _Search:
    """One fit: builds and measures grammars at (t, shape), remembering every measure in ``probes``, which a
    caller may keep per schema: the longest output grows with ``t``, so known measures narrow the search for
    another budget to a few builds (clients send one schema with many ``max_tokens``)."""

    def __init__(self, build: Build, chars: int, cost: Callable[[str], int], probes: Probes) -> None:
        self.build, self.chars, self.cost, self.probes = build, chars, cost, probes
        self.built: dict[tuple[int, Shape], Fitted] = {}

    def fitted(self, t: int, shape: Shape) -> Fitted:
        found = self.built.get((t, shape))
        if found is None:
            cap, spaces, depth, items = shape
            root, rules = self.build(limits_for(t, max_optional=cap, spaces=spaces, depth=depth, items=items))
            longest = (
                ir.measure(ir.Ref(root), rules.rules, self.cost).hi
                if ir.satisfiable(ir.Ref(root), rules.rules)
                else None
            )
            found = self.built[(t, shape)] = Fitted(root, rules, t, longest)
            self.probes[(t, shape)] = longest
        return found

    def fits(self, t: int, shape: Shape) -> bool:
        longest = self.probes[(t, shape)] if (t, shape) in self.probes else self.fitted(t, shape).longest
        return longest is not None and longest <= self.chars

    def largest(self, shape: Shape, lo: int, top: int) -> Fitted:
        """The grammar of the largest ``t`` in [lo, top] that fits, ``lo`` being known to fit."""
        hi = top
        for (t, s), longest in list(self.probes.items()):  # what earlier budgets measured bounds the search
            if s == shape and lo < t <= hi:
                if longest is not None and longest <= self.chars:
                    lo = t
                else:
                    hi = t - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(mid, shape):
                lo = mid
            else:
                hi = mid - 1
        return self.fitted(lo, shape)


def fit(
    build: Build,
    budget_tokens: int,
    *,
    recursive: bool = False,
    cost: Callable[[str], int] = len,
    probes: Probes | None = None,
) -> Fitted:
    """The grammar for the largest limits whose every output fits ``budget_tokens`` tokens (``recursive``: the
    schema has ``$ref`` cycles, whose depth is preferred to longer strings and more items; ``cost``: what a
    literal costs, its characters unless it is written as the model's tokens; ``probes``: the measures of
    earlier fits of the same schema, kept and extended)."""
    search = _Search(build, max(budget_tokens - 1, 1), cost, {} if probes is None else probes)
    if recursive:
        for cap, spaces, _, _ in _SHAPES:
            for depth, items in _RECURSION:
                shape: Shape = (cap, spaces, depth, items)
                if search.fits(_RECURSIVE_STRINGS, shape):
                    return search.largest(shape, _RECURSIVE_STRINGS, _T_MAX)
    # The first shape in which strings of _GOOD_STRINGS characters fit, grown as far as the budget allows.
    for shape in _SHAPES:
        if search.fits(_GOOD_STRINGS, shape):
            return search.largest(shape, _GOOD_STRINGS, _T_MAX)
    # No shape fits that: the shape with the largest t below it. (A recursive schema may need more depth, i.e.
    # a larger t, before it has any finite document at all; then nothing smaller fits either.)
    best: Fitted | None = None
    for shape in _SHAPES:
        if search.fits(0, shape) and (best is None or best.t < _GOOD_STRINGS - 1):
            found = search.largest(shape, 0, _GOOD_STRINGS - 1)
            if best is None or found.t > best.t:
                best = found
    if best is not None:
        return best
    # Even the smallest document is longer than the budget: the tightest grammar; the cut-off is then reported.
    return search.fitted(0, (0, False, None, None))
