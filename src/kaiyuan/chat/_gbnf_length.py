"""The longest (and the least) output of a llama.cpp GBNF grammar, in characters, read from the grammar's text.

Owns: parsing GBNF text (one rule per line, ``name ::= body``: literals with llama.cpp's escapes, character
classes, ``.``, token elements ``<[id]>`` / ``<text>`` / ``!<…>``, rule references, groups, ``|`` and the
``? * + {m} {m,} {m,n}`` repetitions) far enough to measure it. A token element counts as one unit (it is one
token, whatever its text), so with tokens in it the result is in units: characters, and one per such token.
The tool-call grammars use it to check that every call fits its share of the token budget, and the whole
grammar fits the budget, without knowing how the JSON-schema compiler built its rules.
Must not know: JSON Schema, tool-call formats, budgets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["GbnfSyntaxError", "longest_output", "shortest_output"]

_NAME = re.compile(r"[A-Za-z0-9-]+")
_RULE = re.compile(r"\s*([A-Za-z0-9-]+)\s*::=(.*)")
_SIMPLE_ESCAPES = frozenset('nrt"\\[]-^/')
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class GbnfSyntaxError(ValueError):
    """The text is not GBNF this reader understands (an internal error for grammars kaiyuan writes)."""


@dataclass
class _Reader:
    text: str
    pos: int = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, what: str) -> GbnfSyntaxError:
        return GbnfSyntaxError(f"{what} at column {self.pos} of {self.text[:120]!r}")


# A parsed expression: ("lit", n) n characters; ("tok",) one token; ("ref", name); ("seq", [...]);
# ("alt", [...]); ("rep", item, lo, hi-or-None).
_Expr = tuple[Any, ...]


def _escape_end(text: str, pos: int) -> int:
    """Position after the escape starting at ``text[pos] == '\\'``."""
    if pos + 1 >= len(text):
        raise GbnfSyntaxError(f"a dangling backslash in {text[:120]!r}")
    kind = text[pos + 1]
    if kind in _HEX_ESCAPES:
        return pos + 2 + _HEX_ESCAPES[kind]
    if kind in _SIMPLE_ESCAPES:
        return pos + 2
    raise GbnfSyntaxError(f"unknown escape \\{kind} in {text[:120]!r}")


def _literal(r: _Reader) -> _Expr:
    r.pos += 1  # opening quote
    count = 0
    while True:
        if r.pos >= len(r.text):
            raise r.fail("an unterminated literal")
        c = r.text[r.pos]
        if c == '"':
            r.pos += 1
            return ("lit", count)
        r.pos = _escape_end(r.text, r.pos) if c == "\\" else r.pos + 1
        count += 1


def _char_class(r: _Reader) -> _Expr:
    r.pos += 1  # opening bracket
    while True:
        if r.pos >= len(r.text):
            raise r.fail("an unterminated character class")
        c = r.text[r.pos]
        if c == "]":
            r.pos += 1
            return ("lit", 1)
        r.pos = _escape_end(r.text, r.pos) if c == "\\" else r.pos + 1


def _int(r: _Reader) -> int:
    r.skip_space()
    start = r.pos
    while r.pos < len(r.text) and r.text[r.pos].isdigit():
        r.pos += 1
    if start == r.pos:
        raise r.fail("a repetition count expected")
    return int(r.text[start : r.pos])


def _repetition(r: _Reader, item: _Expr) -> _Expr:
    c = r.text[r.pos]
    r.pos += 1
    if c == "?":
        return ("rep", item, 0, 1)
    if c == "*":
        return ("rep", item, 0, None)
    if c == "+":
        return ("rep", item, 1, None)
    lo = _int(r)
    hi: int | None = lo
    if r.peek() == ",":
        r.pos += 1
        hi = None if r.peek() == "}" else _int(r)
    if r.peek() != "}":
        raise r.fail("'}' expected")
    r.pos += 1
    return ("rep", item, lo, hi)


def _atom(r: _Reader) -> _Expr | None:
    c = r.peek()
    if c == '"':
        return _literal(r)
    if c == "[":
        return _char_class(r)
    if c == ".":
        r.pos += 1
        return ("lit", 1)
    if c == "<" or (c == "!" and r.text.startswith("<", r.pos + 1)):
        end = r.text.find(">", r.pos)
        if end < 0:
            raise r.fail("an unterminated token")
        r.pos = end + 1
        return ("tok",)  # one token (<[id]>, <text>, or !<…>: any token but that one)
    if c == "(":
        r.pos += 1
        inner = _alternatives(r)
        if r.peek() != ")":
            raise r.fail("')' expected")
        r.pos += 1
        return inner
    match = _NAME.match(r.text, r.pos)
    if match:
        r.pos = match.end()
        return ("ref", match.group())
    return None


def _sequence(r: _Reader) -> _Expr:
    items: list[_Expr] = []
    while (item := _atom(r)) is not None:
        while r.pos < len(r.text) and r.text[r.pos] in "?*+{":
            item = _repetition(r, item)
        items.append(item)
    return ("seq", items)


def _alternatives(r: _Reader) -> _Expr:
    options = [_sequence(r)]
    while r.peek() == "|":
        r.pos += 1
        options.append(_sequence(r))
    return options[0] if len(options) == 1 else ("alt", options)


def parse(text: str) -> dict[str, _Expr]:
    """The rules of a grammar, by name."""
    rules: dict[str, _Expr] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _RULE.match(line)
        if not match:
            raise GbnfSyntaxError(f"not a rule: {line[:120]!r}")
        r = _Reader(match.group(2))
        body = _alternatives(r)
        if r.peek():
            raise r.fail("unexpected text")
        if match.group(1) in rules:
            raise GbnfSyntaxError(f"rule {match.group(1)!r} is defined twice")
        rules[match.group(1)] = body
    return rules


def longest_output(text: str, root: str = "root") -> int | None:
    """The most characters (one per token element) any output of rule ``root`` can have (None: unbounded, e.g.
    through ``*`` or a cycle of rules). Raises ``GbnfSyntaxError`` for text it cannot read or a reference to an undefined rule."""
    rules = parse(text)
    memo: dict[str, int | None] = {}
    active: set[str] = set()

    def walk(e: _Expr) -> int | None:
        kind = e[0]
        if kind == "lit":
            return int(e[1])
        if kind == "tok":
            return 1
        if kind == "seq" or kind == "alt":
            parts = [walk(item) for item in e[1]]
            if any(p is None for p in parts):
                return None
            numbers = [p for p in parts if p is not None]
            return sum(numbers) if kind == "seq" else max(numbers, default=0)
        if kind == "rep":
            inner = walk(e[1])
            if inner == 0:
                return 0
            return None if inner is None or e[3] is None else inner * e[3]
        name = e[1]
        if name in memo:
            return memo[name]
        if name not in rules:
            raise GbnfSyntaxError(f"rule {name!r} is referenced but not defined")
        if name in active:
            return None  # a cycle: as long as the model likes
        active.add(name)
        result = walk(rules[name])
        active.discard(name)
        memo[name] = result
        return result

    return walk(("ref", root))


def shortest_output(text: str, root: str = "root", *, char_units: int = 1, token_units: int = 1) -> int:
    """The least weight of any output of rule ``root``: ``char_units`` per character of text, ``token_units``
    per token element (a large number when the rule matches nothing). Rules may recurse (fixpoint)."""
    rules = parse(text)
    never = 1 << 62
    best = dict.fromkeys(rules, never)

    def walk(e: _Expr) -> int:
        kind = e[0]
        if kind == "lit":
            return int(e[1]) * char_units
        if kind == "tok":
            return token_units
        if kind == "seq":
            return min(sum(walk(item) for item in e[1]), never)
        if kind == "alt":
            return min((walk(item) for item in e[1]), default=never)
        if kind == "rep":
            return min(walk(e[1]) * e[2], never) if e[2] else 0
        if e[1] not in rules:
            raise GbnfSyntaxError(f"rule {e[1]!r} is referenced but not defined")
        return best[e[1]]

    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            value = walk(body)
            if value < best[name]:
                best[name], changed = value, True
    return walk(("ref", root))
