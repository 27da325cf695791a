"""Translating a JSON Schema ``pattern`` (an ECMA-262 regular expression) into a grammar tree.

Owns: parsing the common regex subset (literals, escapes, ``.``, character classes with ranges and negation,
``\\d \\w \\s`` and their negations, groups, alternation, ``? * + {m} {m,} {m,n}`` and their lazy forms, ``^``/``$``)
into a tree over *decoded* characters, and refusing what cannot be enforced (look-arounds, back-references,
word boundaries, flags, anchors in the middle of a pattern).
Must not know: JSON Schema keywords (beyond raising the error for ``pattern``), GBNF spelling, JSON encoding.

Why a generated string satisfies the pattern: JSON Schema matches patterns anywhere in the string (``re.search``),
and every generated string is a *full* match of the pattern, so it also contains a match. Anchors are checked to
sit where a full match puts them (nothing but empty matches before ``^`` or after ``$``). Shorthand classes are
read as their ASCII sets (``\\d`` = ``[0-9]``), which ECMA-262 and Python's ``re`` (used by validators) both accept;
negated shorthands and negated classes that contain a shorthand keep to printable ASCII, tab/newline, and CJK
ideographs (except for ``\\W``), so Unicode digits or letters never slip in where Python's ``re`` would object.
With ``extra_cap`` (the completion budget), no quantifier repeats more than ``extra_cap`` times beyond its minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaiyuan.chat.grammars import _charset as cs
from kaiyuan.chat.grammars import _ir as ir


class RegexUnsupported(Exception):
    """A construct of the pattern that the translator cannot enforce (the message says which)."""


class RegexSyntaxError(Exception):
    """The pattern is not a valid regular expression."""


_CONTROLS_BUT_WHITESPACE = cs.subtract(((0x00, 0x1F),), cs.of_chars("\t\n\r"))
# Negated classes (``[^"]``) may match any character except most control characters (a subset is still valid).
_NEGATION_UNIVERSE = cs.complement(_CONTROLS_BUT_WHITESPACE)
# Negated shorthands stay within characters on which Python's re and ECMA-262 agree.
_SAFE_BASE = cs.union(cs.PRINTABLE_ASCII, cs.of_chars("\t\n\r"))
_DOT = cs.subtract(_NEGATION_UNIVERSE, cs.normalize([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]))

_MAX_REPEAT = 100_000
_SHORTHAND = {"d": cs.DIGIT, "w": cs.WORD, "s": cs.SPACE}
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}


@dataclass
class _ClassItem:
    ranges: cs.Ranges
    negated_shorthand: bool = False  # \D \W \S
    has_shorthand: bool = False
    has_word: bool = False


@dataclass(frozen=True)
class _Anchor:
    kind: str  # "^" or "$"


@dataclass(frozen=True)
class _Set:
    ranges: cs.Ranges  # one character from the set (a literal is a set of one)


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Rep:
    item: _Node
    lo: int
    hi: int | None


_Node = _Anchor | _Set | _Seq | _Alt | _Rep


def _safe_universe(*, allow_cjk: bool) -> cs.Ranges:
    return cs.union(_SAFE_BASE, cs.CJK) if allow_cjk else _SAFE_BASE


def translate(pattern: str, *, extra_cap: int | None = None) -> ir.Node:
    """The tree of decoded characters whose strings fully match ``pattern``."""
    parser = _Parser(pattern)
    tree = parser.parse()
    _check_anchors(tree)
    return _convert(tree, extra_cap)


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0

    # -- helpers -------------------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.src[i] if i < len(self.src) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            raise RegexSyntaxError(f"pattern ends unexpectedly: {self.src!r}")
        self.pos += 1
        return c

    def unsupported(self, what: str) -> RegexUnsupported:
        return RegexUnsupported(f"{what} (at offset {self.pos} of {self.src!r})")

    # -- grammar -------------------------------------------------------------------------------------------
    def parse(self) -> _Node:
        node = self.alternation()
        if self.pos != len(self.src):
            raise RegexSyntaxError(f"unbalanced ')' at offset {self.pos} of {self.src!r}")
        return node

    def alternation(self) -> _Node:
        branches = [self.concat()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.concat())
        return _Alt(tuple(branches)) if len(branches) > 1 else branches[0]

    def concat(self) -> _Node:
        items: list[_Node] = []
        while self.peek() and self.peek() not in "|)":
            items.append(self.quantified())
        return _Seq(tuple(items))

    def quantified(self) -> _Node:
        atom = self.atom()
        while True:
            bounds = self.quantifier()
            if bounds is None:
                return atom
            if isinstance(atom, _Anchor):
                raise self.unsupported("a quantifier on an anchor")
            lo, hi = bounds
            if self.peek() == "?":
                self.pos += 1  # lazy: same set of strings
            elif self.peek() == "+":
                raise self.unsupported("possessive quantifiers")
            atom = _Rep(atom, lo, hi)

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?") and c:
            self.pos += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if c == "{":
            end = self.src.find("}", self.pos)
            body = self.src[self.pos + 1 : end] if end != -1 else ""
            lo_s, comma, hi_s = body.partition(",")
            if end != -1 and lo_s.isdigit() and (not hi_s or hi_s.isdigit()):
                self.pos = end + 1
                lo = int(lo_s)
                hi = None if comma and not hi_s else int(hi_s) if hi_s else lo
                if hi is not None and hi < lo:
                    raise RegexSyntaxError(f"quantifier {{{body}}} has max below min in {self.src!r}")
                if lo > _MAX_REPEAT:
                    raise self.unsupported(f"a quantifier minimum above {_MAX_REPEAT}")
                return lo, hi
        return None

    def atom(self) -> _Node:
        c = self.take()
        if c == "(":
            return self.group()
        if c == "[":
            return _Set(self.char_class())
        if c == ".":
            return _Set(_DOT)
        if c in "^$":
            return _Anchor(c)
        if c == "\\":
            item = self.escape(in_class=False)
            return _Set(self.combine([item], negated=False))
        if c in "*+?":
            raise RegexSyntaxError(f"nothing to repeat at offset {self.pos - 1} of {self.src!r}")
        if c == "{" and self.src[self.pos - 1 :].startswith("{") and self._looks_like_quantifier():
            raise RegexSyntaxError(f"nothing to repeat at offset {self.pos - 1} of {self.src!r}")
        return _Set(cs.of_chars(c))

    def _looks_like_quantifier(self) -> bool:
        save = self.pos
        self.pos -= 1
        found = self.quantifier() is not None
        self.pos = save
        return found

    def group(self) -> _Node:
        if self.peek() == "?":
            self.pos += 1
            kind = self.take()
            if kind == ":":
                pass
            elif (kind == "P" and self.peek() == "<") or (kind == "<" and self.peek() not in "=!"):
                if kind == "P":
                    self.pos += 1
                end = self.src.find(">", self.pos)
                if end == -1:
                    raise RegexSyntaxError(f"unterminated group name in {self.src!r}")
                self.pos = end + 1
            elif kind in "=!" or kind == "<":
                raise self.unsupported("look-around assertions")
            elif kind == "P" and self.peek() == "=":
                raise self.unsupported("back-references")
            else:
                raise self.unsupported("inline flags and special groups")
        node = self.alternation()
        if self.take() != ")":
            raise RegexSyntaxError(f"missing ')' in {self.src!r}")
        return node

    def escape(self, *, in_class: bool) -> _ClassItem:
        c = self.take()
        if c in _SHORTHAND:
            return _ClassItem(_SHORTHAND[c], has_shorthand=True, has_word=c == "w")
        if c.lower() in _SHORTHAND:
            return _ClassItem(
                _SHORTHAND[c.lower()], negated_shorthand=True, has_shorthand=True, has_word=c == "W"
            )
        if c in _SIMPLE_ESCAPES and not (c == "0" and self.peek().isdigit()):
            return _ClassItem(cs.of_chars(_SIMPLE_ESCAPES[c]))
        if c == "b" and in_class:
            return _ClassItem(cs.of_chars("\b"))
        if c in "bB":
            raise self.unsupported("word boundaries (\\b, \\B)")
        if c.isdigit() or c == "k":
            raise self.unsupported("back-references")
        if c in "pP":
            raise self.unsupported("Unicode property classes (\\p{...})")
        if c == "c":
            raise self.unsupported("control escapes (\\cX)")
        if c == "x":
            return _ClassItem(cs.of_chars(chr(self.hex_digits(2))))
        if c == "u":
            if self.peek() == "{":
                end = self.src.find("}", self.pos)
                if end == -1:
                    raise RegexSyntaxError(f"unterminated \\u{{...}} in {self.src!r}")
                digits = self.src[self.pos + 1 : end]
                self.pos = end + 1
                return _ClassItem(cs.of_chars(chr(self._hex(digits))))
            return _ClassItem(cs.of_chars(chr(self.hex_digits(4))))
        if c.isalnum():
            raise self.unsupported(f"the escape \\{c}")
        return _ClassItem(cs.of_chars(c))

    def _hex(self, digits: str) -> int:
        try:
            value = int(digits, 16)
        except ValueError:
            raise RegexSyntaxError(f"bad hex escape {digits!r} in {self.src!r}") from None
        if value > cs.MAX_CODE_POINT:
            raise RegexSyntaxError(f"code point {digits!r} out of range in {self.src!r}")
        return value

    def hex_digits(self, n: int) -> int:
        digits = self.src[self.pos : self.pos + n]
        if len(digits) != n:
            raise RegexSyntaxError(f"short hex escape in {self.src!r}")
        self.pos += n
        return self._hex(digits)

    def char_class(self) -> cs.Ranges:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            raise self.unsupported("a ']' first in a character class (ECMA-262 and Python disagree on it)")
        items: list[_ClassItem] = []
        while True:
            c = self.take()
            if c == "]":
                break
            if c == "[" and self.peek() in ":=.":
                raise self.unsupported("POSIX classes and set operations inside [...]")
            item = self.escape(in_class=True) if c == "\\" else _ClassItem(cs.of_chars(c))
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                end_c = self.take()
                end = self.escape(in_class=True) if end_c == "\\" else _ClassItem(cs.of_chars(end_c))
                if item.has_shorthand or end.has_shorthand or len(item.ranges) != 1 or len(end.ranges) != 1:
                    raise self.unsupported("a range bounded by a class escape")
                lo, hi = item.ranges[0][0], end.ranges[0][0]
                if lo > hi:
                    raise RegexSyntaxError(f"bad range {chr(lo)}-{chr(hi)} in {self.src!r}")
                item = _ClassItem(((lo, hi),))
            items.append(item)
        return self.combine(items, negated=negated)

    def combine(self, items: list[_ClassItem], *, negated: bool) -> cs.Ranges:
        has_word = any(i.has_word for i in items)
        shorthand = any(i.has_shorthand for i in items)
        parts: list[cs.Ranges] = []
        for item in items:
            if item.negated_shorthand:
                parts.append(cs.subtract(_safe_universe(allow_cjk=not item.has_word), item.ranges))
            else:
                parts.append(item.ranges)
        ranges = cs.union(*parts)
        if negated:
            universe = _safe_universe(allow_cjk=not has_word) if shorthand else _NEGATION_UNIVERSE
            if any(i.negated_shorthand for i in items):
                universe = _safe_universe(allow_cjk=not has_word)
            ranges = cs.subtract(universe, ranges)
        if not ranges:
            raise self.unsupported("a character class that matches no character")
        return ranges


# -- anchors and conversion ------------------------------------------------------------------------------


def _max_len(node: _Node) -> int | None:
    if isinstance(node, _Anchor):
        return 0
    if isinstance(node, _Set):
        return 1
    if isinstance(node, _Seq | _Alt):
        lens = [_max_len(n) for n in node.items]
        known = [v for v in lens if v is not None]
        if len(known) != len(lens):
            return None
        return sum(known) if isinstance(node, _Seq) else max(known, default=0)
    inner = _max_len(node.item)
    if inner == 0:
        return 0
    return None if node.hi is None or inner is None else inner * node.hi


def _check_anchors(node: _Node, before_empty: bool = True, after_empty: bool = True) -> None:
    if isinstance(node, _Anchor):
        if node.kind == "^" and not before_empty:
            raise RegexUnsupported("'^' that is not at the start of the pattern")
        if node.kind == "$" and not after_empty:
            raise RegexUnsupported("'$' that is not at the end of the pattern")
    elif isinstance(node, _Seq):
        items = node.items
        for i, item in enumerate(items):
            before = before_empty and all(_max_len(x) == 0 for x in items[:i])
            after = after_empty and all(_max_len(x) == 0 for x in items[i + 1 :])
            _check_anchors(item, before, after)
    elif isinstance(node, _Alt):
        for item in node.items:
            _check_anchors(item, before_empty, after_empty)
    elif isinstance(node, _Rep):
        once = node.hi == 1
        _check_anchors(node.item, before_empty and once, after_empty and once)


def _convert(node: _Node, cap: int | None) -> ir.Node:
    """The grammar tree of a parsed pattern (anchors dropped: they have been checked to hold)."""
    if isinstance(node, _Anchor):
        return ir.EMPTY
    if isinstance(node, _Set):
        first, *rest = node.ranges
        return ir.lit(chr(first[0])) if first[0] == first[1] and not rest else ir.chars(node.ranges)
    if isinstance(node, _Seq):
        return ir.seq(*(_convert(n, cap) for n in node.items))
    if isinstance(node, _Alt):
        return ir.alt(*(_convert(n, cap) for n in node.items))
    hi = node.hi
    if cap is not None:
        hi = node.lo + cap if hi is None else min(hi, node.lo + cap)
    return ir.rep(_convert(node.item, cap), node.lo, hi)
