"""JSON strings whose value matches a ``pattern`` or a ``format``, within ``minLength``/``maxLength``.

Owns: turning a tree over decoded characters (from ``_regex`` or ``_formats``) into one over their JSON string
encoding, and folding length bounds into it - exactly when one repeated character class carries the variable
length, otherwise by shortening every repetition alike (a subset of the strings, all of them valid).
Must not know: JSON Schema keywords beyond the two it serves, GBNF spelling.
"""

from __future__ import annotations

from functools import lru_cache

from kaiyuan.chat.grammars import _charset as cs
from kaiyuan.chat.grammars import _formats, _regex
from kaiyuan.chat.grammars import _ir as ir


@lru_cache(maxsize=1024)
def string_body(kind: str, source: str, cap: int | None, lo: int, hi: int | None) -> ir.Node | None:
    """The JSON string (quotes included) for a pattern or format within lengths; None when they cannot agree."""
    if kind == "pattern":
        decoded = _regex.translate(source, extra_cap=cap)
    else:
        decoded = _formats.FORMATS[source](cap or 1)
    span = ir.measure(decoded, {})
    if not (lo <= span.lo and (hi is None or (span.hi is not None and span.hi <= hi))):
        narrowed = _narrow_length(decoded, lo, hi)
        if narrowed is None and lo <= span.lo:
            narrowed = _shrink_repetitions(decoded, hi)
        if narrowed is None:
            return None
        decoded = narrowed
    return ir.seq(ir.lit('"'), encode_decoded(decoded), ir.lit('"'))


def encode_decoded(node: ir.Node) -> ir.Node:
    """Turn a tree over decoded characters (regex, format) into one over their JSON string encoding."""
    if isinstance(node, ir.Lit):
        return ir.lit(cs.json_string_body(node.text))
    if isinstance(node, ir.Chars):
        raw, escaped = cs.split_for_json(node.ranges)
        return ir.alt(*([ir.Chars(raw)] if raw else []), *(ir.lit(e) for e in escaped))
    if isinstance(node, ir.Seq):
        return ir.seq(*(encode_decoded(i) for i in node.items))
    if isinstance(node, ir.Alt):
        return ir.alt(*(encode_decoded(i) for i in node.items))
    if isinstance(node, ir.Rep):
        return ir.rep(encode_decoded(node.item), node.min, node.max)
    return node


def _cap_repetitions(node: ir.Node, extra: int) -> ir.Node:
    """Every repetition limited to ``extra`` more than its minimum (a subset of the strings)."""
    if isinstance(node, ir.Seq):
        return ir.seq(*(_cap_repetitions(i, extra) for i in node.items))
    if isinstance(node, ir.Alt):
        return ir.alt(*(_cap_repetitions(i, extra) for i in node.items))
    if isinstance(node, ir.Rep):
        top = node.min + extra if node.max is None else min(node.max, node.min + extra)
        return ir.rep(_cap_repetitions(node.item, extra), node.min, top)
    return node


def _shrink_repetitions(node: ir.Node, hi: int | None) -> ir.Node | None:
    """The largest uniform cap on repetitions whose longest string has at most ``hi`` characters."""
    if hi is None:
        return None

    def longest(extra: int) -> int | None:
        return ir.measure(_cap_repetitions(node, extra), {}).hi

    if (longest(0) or 0) > hi:
        return None
    lo_c, hi_c = 0, hi
    while lo_c < hi_c:
        mid = (lo_c + hi_c + 1) // 2
        value = longest(mid)
        if value is not None and value <= hi:
            lo_c = mid
        else:
            hi_c = mid - 1
    return _cap_repetitions(node, lo_c)


def _narrow_length(node: ir.Node, lo: int, hi: int | None) -> ir.Node | None:
    """Fold minLength/maxLength into a tree of fixed-length parts around one repetition of one character."""
    items: list[ir.Node] = list(node.items) if isinstance(node, ir.Seq) else [node]
    variable = [i for i, item in enumerate(items) if ir.measure(item, {}).lo != ir.measure(item, {}).hi]
    if len(variable) != 1:
        return None
    index = variable[0]
    target = items[index]
    if not isinstance(target, ir.Rep) or ir.measure(target.item, {}) != ir.Span(1, 1):
        return None
    fixed = sum(ir.measure(item, {}).lo for i, item in enumerate(items) if i != index)
    new_lo = max(target.min, lo - fixed)
    new_hi = None if hi is None else hi - fixed
    if target.max is not None:
        new_hi = target.max if new_hi is None else min(new_hi, target.max)
    if new_hi is not None and new_hi < new_lo:
        return None
    items[index] = ir.rep(target.item, new_lo, new_hi)
    return ir.seq(*items)
