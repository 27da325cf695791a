"""The grammar tree every compiler stage builds, and what can be computed from it (shortest and longest output).

Owns: the node types (literal text, one character from a set, sequence, alternation, bounded repetition, named
rule reference), smart constructors that keep trees small, and length analysis in output characters.
Must not know: JSON Schema, regexes, GBNF spelling.

Lengths are counted in characters of the generated text. ``None`` as a maximum means unbounded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kaiyuan.chat.grammars import _charset as cs


@dataclass(frozen=True, slots=True)
class Lit:
    """Literal output text (already in its final, JSON-encoded form)."""

    text: str


@dataclass(frozen=True, slots=True)
class Chars:
    """One output character from a set."""

    ranges: cs.Ranges


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self, (Seq, self.items))


@dataclass(frozen=True, slots=True)
class Alt:
    """A choice; ``Alt(())`` matches nothing (the empty language)."""

    items: tuple[Node, ...]
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self, (Alt, self.items))


@dataclass(frozen=True, slots=True)
class Rep:
    item: Node
    min: int
    max: int | None
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self, (Rep, self.item, self.min, self.max))


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a named rule (used for sharing and for recursion)."""

    name: str


Node = Lit | Chars | Seq | Alt | Rep | Ref


def _cached_hash(node: Seq | Alt | Rep, key: tuple[object, ...]) -> int:
    """Trees share subtrees (an array body holds its item twice), so an uncached hash walks every path: for
    nested schemas that is exponential. Each node hashes its children once."""
    if not node._hash:
        object.__setattr__(node, "_hash", hash(key) or 1)
    return node._hash


EMPTY: Node = Seq(())
NEVER: Node = Alt(())


def is_never(node: Node) -> bool:
    return isinstance(node, Alt) and not node.items


def lit(text: str) -> Node:
    return Lit(text) if text else EMPTY


def chars(ranges: cs.Ranges) -> Node:
    return Chars(ranges) if ranges else NEVER


def seq(*items: Node) -> Node:
    flat: list[Node] = []
    for item in items:
        if is_never(item):
            return NEVER
        parts = item.items if isinstance(item, Seq) else (item,)
        for part in parts:
            if isinstance(part, Lit) and flat and isinstance(flat[-1], Lit):
                flat[-1] = Lit(flat[-1].text + part.text)
            else:
                flat.append(part)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*items: Node) -> Node:
    flat: dict[Node, None] = {}
    for item in items:
        for part in item.items if isinstance(item, Alt) else (item,):
            flat.setdefault(part)
    parts = tuple(flat)
    return parts[0] if len(parts) == 1 else Alt(parts)


def rep(item: Node, lo: int, hi: int | None) -> Node:
    if hi is not None and hi < lo:
        return NEVER
    if hi == 0 or item == EMPTY:
        return EMPTY
    if is_never(item):
        return EMPTY if lo == 0 else NEVER
    if lo == 1 and hi == 1:
        return item
    return Rep(item, lo, hi)


def opt(item: Node) -> Node:
    return rep(item, 0, 1)


@dataclass(frozen=True, slots=True)
class Span:
    """Shortest and longest output of a node, in characters (``hi`` None: unbounded)."""

    lo: int
    hi: int | None


_INF_LO = 1 << 62


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def measure(node: Node, rules: Mapping[str, Node], cost: Callable[[str], int] = len) -> Span:
    """Shortest and longest output of ``node``; rules reached through a cycle count as unbounded. ``cost`` says
    what a literal costs (its characters by default; the tokens it is spelled with, when it is)."""
    cache: dict[str, Span] = {}
    active: set[str] = set()
    shared: dict[int, Span] = {}  # by node identity: trees share subtrees, walking each path is exponential

    def walk(n: Node) -> Span:
        if isinstance(n, Lit):
            units = cost(n.text)
            return Span(units, units)
        if isinstance(n, Chars):
            return Span(1, 1)
        if isinstance(n, Ref):
            return walk_rule(n.name)
        found = shared.get(id(n))
        if found is None:
            found = shared[id(n)] = walk_compound(n)
        return found

    def walk_compound(n: Seq | Alt | Rep) -> Span:
        if isinstance(n, Seq):
            lo = 0
            span_hi: int | None = 0
            for item in n.items:
                s = walk(item)
                lo += s.lo
                span_hi = _add(span_hi, s.hi)
            return Span(min(lo, _INF_LO), span_hi)
        if isinstance(n, Alt):
            if not n.items:
                return Span(_INF_LO, 0)
            spans = [walk(item) for item in n.items]
            his = [s.hi for s in spans]
            return Span(
                min(s.lo for s in spans), None if None in his else max(h for h in his if h is not None)
            )
        s = walk(n.item)
        rep_hi: int | None = None if n.max is None or s.hi is None else s.hi * n.max
        if n.max is None and s.hi == 0:
            rep_hi = 0
        return Span(min(s.lo * n.min, _INF_LO), rep_hi)

    def walk_rule(name: str) -> Span:
        if name in cache:
            return cache[name]
        if name in active:
            # A cycle: unbounded above; the shortest way through does not take the cycle.
            return Span(_INF_LO, None)
        active.add(name)
        result = walk(rules[name])
        active.discard(name)
        cache[name] = result
        return result

    return walk(node)


def shortest(node: Node, rules: Mapping[str, Node]) -> int:
    """Length of the shortest output (a large number when the node matches nothing)."""
    return _shortest_fixpoint(rules)(node)


def _shortest_fixpoint(rules: Mapping[str, Node]) -> Callable[[Node], int]:
    """Shortest lengths of recursive rules by fixpoint iteration (``measure`` is exact only without cycles)."""
    best: dict[str, int] = dict.fromkeys(rules, _INF_LO)
    shared: dict[int, int] = {}  # by node identity, for one pass over the rules (``best`` changes between)

    def walk(n: Node) -> int:
        if isinstance(n, Lit):
            return len(n.text)
        if isinstance(n, Chars):
            return 1
        if isinstance(n, Ref):
            return best.get(n.name, _INF_LO)
        found = shared.get(id(n))
        if found is None:
            found = shared[id(n)] = walk_compound(n)
        return found

    def walk_compound(n: Seq | Alt | Rep) -> int:
        if isinstance(n, Seq):
            return min(sum(walk(i) for i in n.items), _INF_LO)
        if isinstance(n, Alt):
            return min((walk(i) for i in n.items), default=_INF_LO)
        return min(walk(n.item) * n.min, _INF_LO) if n.min else 0

    changed = True
    while changed:
        changed = False
        shared.clear()
        for name, body in rules.items():
            value = walk(body)
            if value < best[name]:
                best[name] = value
                changed = True
    return walk


def satisfiable(node: Node, rules: Mapping[str, Node]) -> bool:
    return shortest(node, rules) < _INF_LO


def left_recursive(rules: Mapping[str, Node]) -> str | None:
    """A rule that can reach itself before any character is written (llama.cpp refuses such grammars), or None."""
    length = _shortest_fixpoint(rules)

    seen: set[int] = set()

    def firsts(n: Node, out: set[str]) -> None:
        """Rules ``n`` may enter before writing its first character."""
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, Ref):
            out.add(n.name)
        elif isinstance(n, Seq):
            for item in n.items:
                firsts(item, out)
                if length(item) > 0:
                    break
        elif isinstance(n, Alt):
            for item in n.items:
                firsts(item, out)
        elif isinstance(n, Rep) and n.max != 0:
            firsts(n.item, out)

    edges: dict[str, set[str]] = {}
    for name, body in rules.items():
        edges[name] = set()
        seen.clear()
        firsts(body, edges[name])
    # A cycle in ``edges``: peel off rules that enter no remaining rule until nothing more can go.
    remaining = {name: {t for t in targets if t in rules} for name, targets in edges.items()}
    changed = True
    while changed:
        changed = False
        for name in [n for n, targets in remaining.items() if not targets]:
            del remaining[name]
            changed = True
            for targets in remaining.values():
                targets.discard(name)
    return min(remaining, default=None)
