"""Spelling a grammar tree as llama.cpp GBNF text.

Owns: rule names (prefixing, uniqueness), escaping of literals and character classes, and writing repetitions
so that llama.cpp's parser accepts them: it expands ``x{m,n}`` into up to n rules and refuses a repetition whose
expansion exceeds 2,000 rules, so every repeated group becomes its own rule and long counts are split into blocks.
Must not know: JSON Schema, regexes, budgets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from kaiyuan.chat.grammars import _charset as cs
from kaiyuan.chat.grammars._ir import Alt, Chars, Lit, Node, Ref, Rep, Seq

_NAME_RE = re.compile(r"[^A-Za-z0-9-]+")
_PREFIX_RE = re.compile(r"[A-Za-z0-9-]*")

# llama.cpp refuses a repetition that expands to more than 2,000 rules (MAX_REPETITION_THRESHOLD).
_INLINE_REPEAT_LIMIT = 1000
_MAX_BLOCK = 2000


class RuleSet:
    """Named rules of one grammar (or of one embeddable part of a grammar), with unique, prefixed names."""

    def __init__(self, prefix: str = "") -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"rule_prefix {prefix!r} may only contain ASCII letters, digits and '-'")
        self.prefix = prefix
        self.rules: dict[str, Node] = {}
        self._taken: set[str] = set()

    def new_name(self, hint: str) -> str:
        """Reserve a fresh rule name derived from ``hint`` (its body is set later with ``define``)."""
        base = self.prefix + (_NAME_RE.sub("-", hint).strip("-").lower() or "rule")
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name)
        return name

    def define(self, name: str, body: Node) -> Ref:
        self.rules[name] = body
        return Ref(name)

    def add(self, hint: str, body: Node) -> Ref:
        return self.define(self.new_name(hint), body)


#: text → the model's tokens that spell it exactly (None when no sequence of tokens does)
TokensOf = Callable[[str], Sequence[int] | None]


def spelled(text: str, tokens_of: TokensOf | None) -> Sequence[int] | None:
    """The tokens a literal is written with: the model's own, when they spell it exactly in fewer units than its
    characters (a generation must then write exactly those tokens); None: written as text."""
    if tokens_of is None or len(text) < 2:
        return None
    tokens = tokens_of(text)
    return tokens if tokens is not None and 0 < len(tokens) < len(text) else None


def units(text: str, tokens_of: TokensOf | None) -> int:
    """What a literal costs in a budget: its tokens when it is spelled with them, else its characters (every
    generated token carries at least one)."""
    tokens = spelled(text, tokens_of)
    return len(text) if tokens is None else len(tokens)


def write(rules: RuleSet, root: str, tokens_of: TokensOf | None = None) -> str:
    """GBNF text for every rule reachable from ``root`` (root first); with ``tokens_of``, literals are written
    as the model's tokens where that is shorter (see ``spelled``)."""
    return _Writer(rules, tokens_of).run(root)


class _Writer:
    def __init__(self, rules: RuleSet, tokens_of: TokensOf | None = None) -> None:
        self.tokens_of = tokens_of
        self.ruleset = rules
        self.hoisted: dict[Node, str] = {}
        self.lines: dict[str, str] = {}
        self.pending: list[str] = []

    def run(self, root: str) -> str:
        self.pending.append(root)
        while self.pending:
            name = self.pending.pop(0)
            if name in self.lines:
                continue
            self.lines[name] = ""  # reserve: a rule may refer to itself
            self.lines[name] = self.expr(self.ruleset.rules[name])
        return "".join(f"{name} ::= {body}\n" for name, body in self.lines.items())

    # -- expressions -------------------------------------------------------------------------------------
    def expr(self, node: Node) -> str:
        if isinstance(node, Alt):
            if not node.items:
                raise ValueError("internal error: an empty alternative reached the GBNF writer")
            return " | ".join(self.seq_item(item, in_alt=True) for item in node.items)
        return self.seq_item(node, in_alt=True)

    def seq_item(self, node: Node, *, in_alt: bool = False) -> str:
        if isinstance(node, Lit):
            tokens = spelled(node.text, self.tokens_of)
            if tokens is None:
                return literal(node.text)
            text = " ".join(f"<[{t}]>" for t in tokens)
            return text if in_alt or len(tokens) == 1 else f"({text})"
        if isinstance(node, Chars):
            return char_class(node.ranges)
        if isinstance(node, Ref):
            self.pending.append(node.name)
            return node.name
        if isinstance(node, Seq):
            if not node.items:
                return '""'
            text = " ".join(self.seq_item(item) for item in node.items)
            return text if in_alt else f"({text})"
        if isinstance(node, Alt):
            return f"({self.expr(node)})"
        return self.repeat(node)

    def atom(self, node: Node) -> str:
        """A single GBNF symbol for ``node``: terminals and references as they are, anything else hoisted."""
        if isinstance(node, Lit | Chars | Ref):
            return self.seq_item(node)
        name = self.hoisted.get(node)
        if name is None:
            name = self.ruleset.new_name("rep")
            self.ruleset.rules[name] = node
            self.hoisted[node] = name
        self.pending.append(name)
        return name

    def repeat(self, node: Rep) -> str:
        x = self.atom(node.item)
        lo, hi = node.min, node.max
        if hi is not None and hi <= _INLINE_REPEAT_LIMIT:
            return _suffix(x, lo, hi)
        if hi is None and lo <= _INLINE_REPEAT_LIMIT:
            return _suffix(x, lo, None)
        parts: list[str] = []
        if lo > _INLINE_REPEAT_LIMIT:
            parts.append(self.fixed(node.item, x, lo))
        elif lo:
            parts.append(_suffix(x, lo, lo))
        if hi is None:
            parts.append(f"{x}*")
        elif hi > lo:
            parts.append(self.up_to(node.item, x, hi - lo))
        return " ".join(parts) if parts else '""'

    def block(self, item: Node, x: str, size: int) -> str:
        key = Rep(item, size, size)
        name = self.hoisted.get(key)
        if name is None:
            name = self.ruleset.new_name("block")
            self.hoisted[key] = name
            self.lines[name] = f"{x}{{{size}}}"
        return name

    def _block_size(self, count: int) -> int:
        return min(_MAX_BLOCK, max(100, -(-count // _INLINE_REPEAT_LIMIT)))

    def fixed(self, item: Node, x: str, count: int) -> str:
        size = self._block_size(count)
        q, r = divmod(count, size)
        q = min(q, _INLINE_REPEAT_LIMIT)  # beyond ~2M repetitions: no output can be that long anyway
        parts = [_suffix(self.block(item, x, size), q, q)]
        if r:
            parts.append(_suffix(x, r, r))
        return " ".join(parts)

    def up_to(self, item: Node, x: str, count: int) -> str:
        """Between 0 and ``count`` repetitions, written without exceeding llama.cpp's expansion limit."""
        size = self._block_size(count)
        q, r = divmod(count, size)
        q = min(q, _INLINE_REPEAT_LIMIT)
        blk = self.block(item, x, size)
        short = f"{_suffix(blk, 0, q - 1)} {_suffix(x, 0, size - 1)}" if q > 1 else _suffix(x, 0, size - 1)
        full = f"{_suffix(blk, q, q)} {_suffix(x, 0, r)}" if r else _suffix(blk, q, q)
        name = self.ruleset.new_name("upto")
        self.lines[name] = f"{short} | {full}"
        return name


def _suffix(x: str, lo: int, hi: int | None) -> str:
    if hi == 0:
        return '""'
    if (lo, hi) == (1, 1):
        return x
    if (lo, hi) == (0, 1):
        return f"{x}?"
    if hi is None:
        return f"{x}*" if lo == 0 else f"{x}+" if lo == 1 else f"{x}{{{lo},}}"
    if lo == hi:
        return f"{x}{{{lo}}}"
    return f"{x}{{{lo},{hi}}}"


def _escape(cp: int, *, in_class: bool) -> str:
    c = chr(cp)
    if c.isascii() and (c.isalnum() or c == " " or (not in_class and c not in '"\\' and c.isprintable())):
        return c
    if not in_class and c in '"\\':
        return "\\" + c
    if cp == 0x0A:
        return "\\n"
    if cp == 0x09:
        return "\\t"
    if cp == 0x0D:
        return "\\r"
    if cp < 0x80 or (0x80 <= cp < 0xA0):
        return f"\\x{cp:02X}"
    if not in_class and c.isprintable():
        return c
    return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"


def literal(text: str) -> str:
    return '"' + "".join(_escape(ord(c), in_class=False) for c in text) + '"'


def _class_body(ranges: cs.Ranges) -> Iterator[str]:
    for lo, hi in ranges:
        if lo == hi:
            yield _escape(lo, in_class=True)
        elif hi == lo + 1:
            yield _escape(lo, in_class=True) + _escape(hi, in_class=True)
        else:
            yield f"{_escape(lo, in_class=True)}-{_escape(hi, in_class=True)}"


def char_class(ranges: cs.Ranges) -> str:
    """The shorter of ``[...]`` and ``[^...]`` for a set of code points (surrogates never occur in UTF-8)."""
    excluded = cs.complement(ranges)
    if not excluded:
        return "[\\x00-\\U0010FFFF]"
    if len(excluded) < len(ranges):
        return "[^" + "".join(_class_body(excluded)) + "]"
    return "[" + "".join(_class_body(ranges)) + "]"
