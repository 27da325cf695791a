"""Grammars that force a tool call: ``tool_choice: "required"`` or a named function, in each dialect's format.

Owns writing llama.cpp GBNF (root rule ``root``) whose every sentence is a call the dialect's parser reads back,
naming an offered function, with arguments valid against that function's JSON schema, and fitting those calls
into a token budget. The JSON of the arguments comes from ``kaiyuan.chat.grammars.schema_to_gbnf_rules`` (one
rule prefix per function); formats that write each parameter as its own tag (GLM, Hunyuan, Qwen3-Coder, DeepSeek
V3.2) get one value rule per parameter. It knows nothing of engines or sampling: the grammar is applied to the
answer, after any reasoning, by the caller.

Formats writing parameters as tags can only list the parameters the schema declares: required ones always, in
schema order, optional ones optionally. Such a string parameter is written raw, so its schema may only use
``enum``/``const``/``maxLength``/``minLength`` (other string keywords raise ``UnsupportedFeature``); raw strings
are capped at 256 characters unless ``maxLength`` says otherwise, and never contain ``<``.

The budget (``budget_tokens``): the longest output the grammar allows has at most ``budget_tokens - 1`` units,
the rule of the JSON-schema compiler (every token carries at least one character; one token is kept for
end-of-sequence), so a generation under the grammar ends with a complete call, never cut off by ``max_tokens``.
A unit is a character, except that a marker the model's vocabulary has as one token (``<tool_call>``,
``<｜tool▁sep｜>``, ``[TOOL_CALLS]``; the caller says which through ``token_of``) is written as that token and
counts one. The whole output is counted: the section markers, each call's fixed markup (wrappers, name, keys),
its arguments, separators and the number of calls. Each function's *tightest* call (empty strings, no optional
parameters, compact JSON) must fit, or the function is left out; if no function fits, ``InvalidRequest``
(param ``max_tokens``) says how many tokens a call needs. The first call gets the room, less what further
parallel calls take: each further call gets room for twice the largest tightest call, and there are further
calls only while the first keeps at least half of the room (at most :data:`MAX_PARALLEL_CALLS` calls in all).
Within a call, JSON arguments are fitted by the schema compiler; tag formats share the call's room among
parameters (each gets at least its tightest value and at most its longest, the rest evenly), dropping optional
parameters from the last when even their tightest values do not fit.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from kaiyuan.chat._gbnf_length import longest_output, shortest_output
from kaiyuan.chat.grammars._gbnf import TokensOf, spelled
from kaiyuan.errors import InvalidRequest, UnsupportedFeature

if TYPE_CHECKING:
    from kaiyuan.chat.dialects import Dialect

__all__ = ["MAX_PARALLEL_CALLS", "build_tool_call_grammar"]

#: at most this many calls in one answer when parallel calls are allowed
MAX_PARALLEL_CALLS = 8
# under a budget, each further parallel call gets room for this many times the largest tightest call
_EXTRA_CALL_ROOM = 2
_RAW_STRING_CAP = 256
_TOO_LONG = 1 << 40  # the length of what never fits
# a recursive schema may need some depth before it has any finite document: probe with this budget then
_DEEP_PROBE_CHARS = 4096
_PARAMS_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "description",
        "title",
        "$schema",
        "$id",
        "$defs",
    }
    | {"definitions", "strict", "$comment", "examples", "default"}
)
_RAW_STRING_KEYWORDS = frozenset({"type", "description", "title", "enum", "const", "maxLength", "minLength"})
_RAW_STRING_KEYWORDS |= frozenset({"examples", "default", "$comment", "deprecated", "readOnly", "writeOnly"})


def lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


#: markup that may be one token of a model's vocabulary: ``<tool_call>``, ``<｜tool▁sep｜>``, ``[TOOL_CALLS]``
_MARKER = re.compile(r"<[^<>\s]{2,}>|\[[A-Z_]{2,}\]")


@dataclass
class _Speller:
    """Writes fixed markup as GBNF and says what it costs in budget units (characters, or one per token).

    With ``token_of`` (text → its token id when the model's vocabulary has it as one token), markers such as
    ``<tool_call>`` are written as that token (GBNF ``<[id]>``) and cost one unit, the rest stays literal text
    at one unit per character. Without it, everything is literal text."""

    token_of: Callable[[str], int | None] | None = None
    tokens_of: TokensOf | None = None
    _tokens: dict[str, int | None] = field(default_factory=dict)

    def __call__(self, text: str) -> tuple[str, int]:
        if not text:
            return '""', 0
        parts: list[str] = []
        cost = 0
        pos = 0
        for match in _MARKER.finditer(text) if self.token_of is not None else ():
            token = self._token(match.group())
            if token is None:
                continue
            if match.start() > pos:
                cost += self._plain(text[pos : match.start()], parts)
            parts.append(f"<[{token}]>")
            cost += 1
            pos = match.end()
        if pos < len(text):
            cost += self._plain(text[pos:], parts)
        return " ".join(parts), cost

    def _plain(self, text: str, parts: list[str]) -> int:
        """Text without markers: the model's own tokens where they spell it in fewer units, else characters."""
        tokens = spelled(text, self.tokens_of)
        if tokens is None:
            parts.append(lit(text))
            return len(text)
        parts.extend(f"<[{t}]>" for t in tokens)
        return len(tokens)

    def _token(self, marker: str) -> int | None:
        if marker not in self._tokens:
            assert self.token_of is not None
            self._tokens[marker] = self.token_of(marker)
        return self._tokens[marker]

    def cost(self, text: str) -> int:
        return self(text)[1]


@dataclass
class _Function:
    index: int
    name: str
    parameters: dict[str, Any]


@dataclass
class _Grammar:
    """Collects rules; every function gets its own rule-name prefix (``f<i>-``, ``m-f<i>-`` for further calls)."""

    rules: list[str] = field(default_factory=list)

    def add(self, name: str, body: str) -> str:
        self.rules.append(f"{name} ::= {body}")
        return name

    def merge(self, other: _Grammar) -> None:
        self.rules.extend(other.rules)

    def text(self, root_body: str) -> str:
        return "\n".join([f"root ::= {root_body}", *self.rules]) + "\n"


def build_tool_call_grammar(
    dialect: Dialect,
    tools: list[dict[str, Any]],
    tool_choice: str | dict[str, Any],
    parallel: bool,
    *,
    budget_tokens: int | None = None,
    token_of: Callable[[str], int | None] | None = None,
    tokens_of: TokensOf | None = None,
    longest_token: int | None = None,
) -> str:
    """GBNF (root rule ``root``) admitting only tool calls in ``dialect``'s format.

    ``tool_choice`` is ``"required"`` (any offered function) or ``{"type": "function", "function": {"name": …}}``
    (that one). ``parallel`` allows up to :data:`MAX_PARALLEL_CALLS` calls, else exactly one. With
    ``budget_tokens`` every output fits in that many tokens (see the module docstring). ``token_of`` (text → its
    token id, when the model's vocabulary has that text as one token) lets markers such as ``<tool_call>`` be
    written as the model's own token, which costs one token of the budget instead of one per character;
    ``tokens_of`` (text → the model's tokens that spell it exactly) does the same for all fixed text (the
    call's head, JSON keys and punctuation). ``longest_token`` (the most characters one token of the vocabulary
    holds) makes the refusal exact: a budget is refused only when even the fewest tokens a complete call can
    take exceed it; when a call may fit but the grammar cannot promise it, the tightest grammar is returned
    (the answer may then end at ``max_tokens``).
    Raises ``InvalidRequest`` for a bad choice or tool list, or a budget too small for any complete call
    (param ``max_tokens``), and ``UnsupportedFeature`` for a schema the format cannot enforce.
    """
    functions = _chosen_functions(tools, tool_choice)
    fmt = _FORMATS.get(dialect.tool_parser)
    if fmt is None:  # pragma: no cover - every registered parser has a format (tested)
        raise UnsupportedFeature(f"no tool-call grammar for the {dialect.name!r} format", param="tool_choice")
    spell = _Speller(token_of, tokens_of)
    calls = fmt.calls(dialect.variant, spell)
    grammar = _Grammar()
    if budget_tokens is None:
        layout = fmt.layout(dialect.variant, parallel)
        first = _alternatives(grammar, "call", [calls.write(grammar, f, None, "") for f in functions])
        more = first
        extras = MAX_PARALLEL_CALLS - 1 if parallel else 0
    else:
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise InvalidRequest(
                f"the token budget must be a positive integer, got {budget_tokens!r}", param="max_tokens"
            )
        tightest = {f.index: calls.tightest(f) for f in functions}
        layout = fmt.layout(dialect.variant, False)
        try:
            plan = _plan(functions, tightest, layout, spell, budget_tokens, False)
        except InvalidRequest as refused:
            # No call is *certain* to fit; one may still: the tightest grammar, unless even the fewest tokens
            # a complete call can take are more than the budget.
            if longest_token is None:
                raise
            room = max(tightest.values())
            first = _budgeted_alternatives(grammar, calls, functions, tightest, room, "")
            text = grammar.text(" ".join(_layout_parts(spell, layout, first, first, 0)))
            fewest = _fewest_tokens(text, longest_token)
            if fewest > budget_tokens:
                raise InvalidRequest(
                    f"a complete tool call does not fit in {budget_tokens} tokens: the shortest, in this model's "
                    f"format and vocabulary, takes at least {fewest}; raise max_tokens (when the model thinks, "
                    "the call gets what is left after the thinking budget)",
                    param="max_tokens",
                ) from refused
            return text
        if parallel:  # the parallel layout, where it leaves room for more than one call (generic's is longer)
            with contextlib.suppress(InvalidRequest):
                parallel_layout = fmt.layout(dialect.variant, True)
                parallel_plan = _plan(functions, tightest, parallel_layout, spell, budget_tokens, True)
                if parallel_plan.extras:
                    layout, plan = parallel_layout, parallel_plan
        first = _budgeted_alternatives(grammar, calls, functions, tightest, plan.first, "")
        more = (
            _budgeted_alternatives(grammar, calls, functions, tightest, plan.extra, "m-")
            if plan.extras
            else first
        )
        extras = plan.extras
    text = grammar.text(" ".join(_layout_parts(spell, layout, first, more, extras)))
    if budget_tokens is not None:
        _check_fits(text, budget_tokens)
    return text


def _layout_parts(spell: _Speller, layout: _Layout, first: str, more: str, extras: int) -> list[str]:
    """The root rule's body: the section markers around the first call and up to ``extras`` more."""
    parts = [spell(layout.begin)[0]] if layout.begin else []
    parts.append(first)
    if extras:
        sep = f"{spell(layout.sep)[0]} " if layout.sep else ""
        parts.append(f"({sep}{more}){{0,{extras}}}")
    if layout.end:
        parts.append(spell(layout.end)[0])
    return parts


def _fewest_tokens(text: str, longest_token: int) -> int:
    """A lower bound on the tokens of any output of the grammar: each token element is one token, and free text
    takes at least one token per ``longest_token`` characters (no token of the vocabulary holds more)."""
    weighted = shortest_output(text, char_units=1, token_units=longest_token)
    return -(-weighted // longest_token)


def _chosen_functions(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any]) -> list[_Function]:
    functions: list[_Function] = []
    for i, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRequest(f"tools[{i}] is not a function tool with a name", param="tools")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(
                f"tools[{i}].function.parameters must be a JSON Schema object", param="tools"
            )
        functions.append(_Function(len(functions), function["name"], parameters))
    if not functions:
        raise InvalidRequest("tool_choice needs at least one tool in 'tools'", param="tool_choice")
    if tool_choice == "required":
        return functions
    if isinstance(tool_choice, dict):
        name = (
            (tool_choice.get("function") or {}).get("name") if tool_choice.get("type") == "function" else None
        )
        if not isinstance(name, str):
            raise InvalidRequest(
                "tool_choice must be 'required' or {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        chosen = [f for f in functions if f.name == name]
        if not chosen:
            known = ", ".join(f.name for f in functions)
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not in tools ({known})", param="tool_choice"
            )
        return [_Function(0, chosen[0].name, chosen[0].parameters)]
    raise InvalidRequest(
        f"a tool-call grammar is only built for tool_choice 'required' or a named function, not {tool_choice!r}",
        param="tool_choice",
    )


# -- the budget ---------------------------------------------------------------------------------------------------


def _check_fits(text: str, budget_tokens: int) -> None:
    """The plan makes every output fit; measuring the finished grammar keeps that promise checked."""
    longest = longest_output(text)
    if longest is None or longest > budget_tokens - 1:  # pragma: no cover - a bug in the plan
        raise RuntimeError(
            f"internal error: a tool-call grammar of {longest} units for {budget_tokens} tokens"
        )


@dataclass(frozen=True)
class _Layout:
    """How a format strings its calls together: ``begin call (sep call)* end``."""

    begin: str = ""
    end: str = ""
    sep: str = ""


@dataclass(frozen=True)
class _Plan:
    first: int  # units for the first call
    extra: int  # units for each further call
    extras: int  # how many further calls


def _plan(
    functions: list[_Function],
    tightest: dict[int, int],
    layout: _Layout,
    spell: _Speller,
    budget_tokens: int,
    parallel: bool,
) -> _Plan:
    room = budget_tokens - 1 - spell.cost(layout.begin) - spell.cost(layout.end)
    fitting = [tightest[f.index] for f in functions if tightest[f.index] <= room]
    if not fitting:
        smallest = min(functions, key=lambda f: tightest[f.index])
        need = budget_tokens - room + tightest[smallest.index]
        raise InvalidRequest(
            f"a complete tool call does not fit in {budget_tokens} tokens: the shortest ({smallest.name!r}, in "
            f"this model's format) needs {need}; raise max_tokens (when the model thinks, the call gets what "
            "is left after the thinking budget)",
            param="max_tokens",
        )
    if not parallel:
        return _Plan(room, 0, 0)
    extra = _EXTRA_CALL_ROOM * max(fitting)
    keep = max(room // 2, extra)  # the first call keeps at least half of the room
    sep = spell.cost(layout.sep)
    extras = min(MAX_PARALLEL_CALLS - 1, max(0, room - keep) // (sep + extra))
    return _Plan(room - extras * (sep + extra), extra, extras)


def _budgeted_alternatives(
    grammar: _Grammar,
    calls: _Calls,
    functions: list[_Function],
    tightest: dict[int, int],
    chars: int,
    tier: str,
) -> str:
    written = [calls.write(grammar, f, chars, tier) for f in functions if tightest[f.index] <= chars]
    return _alternatives(grammar, f"{tier}call", written)


def _alternatives(grammar: _Grammar, name: str, written: list[str | None]) -> str:
    rules = [rule for rule in written if rule is not None]
    if not rules:  # pragma: no cover - a function whose tightest call fits is always written
        raise RuntimeError("internal error: no tool call fits the planned room")
    return grammar.add(name, " | ".join(rules))


@lru_cache(maxsize=512)
def _longest(text: str, root: str) -> int:
    longest = longest_output(text, root)
    return _TOO_LONG if longest is None else longest


def _json_rules(
    schema: Any, prefix: str, chars: int | None, tokens_of: TokensOf | None
) -> tuple[str, str, int]:
    """``(root, rules, longest)`` for one JSON value; with ``chars``, fitted into that many units (the result is
    longer only when even the tightest value is)."""
    from kaiyuan.chat.grammars import schema_to_gbnf_rules

    budget = None if chars is None else max(chars, 0) + 1
    root, text = schema_to_gbnf_rules(schema, rule_prefix=prefix, budget_tokens=budget, tokens_of=tokens_of)
    return root, text, _longest(text, root)


def _tightest_json(schema: Any, prefix: str, tokens_of: TokensOf | None) -> int:
    """The longest value of the tightest grammar for ``schema`` (strings empty, no optional properties)."""
    try:
        return _json_rules(schema, prefix, 0, tokens_of)[2]
    except InvalidRequest:
        # no finite value at the smallest depth: a recursive schema that needs a few levels
        return _json_rules(schema, prefix, _DEEP_PROBE_CHARS, tokens_of)[2]


class _Calls(Protocol):
    """Writes the calls of one format."""

    def tightest(self, f: _Function) -> int:
        """Units of ``f``'s longest call at its tightest (what it needs at least)."""

    def write(self, grammar: _Grammar, f: _Function, chars: int | None, tier: str) -> str | None:
        """The rule of one call of ``f`` whose every output has at most ``chars`` units (None: no budget),
        its rules named with ``tier`` first; None when it cannot fit."""


@dataclass(frozen=True)
class _Format:
    layout: Callable[[str, bool], _Layout]  # (variant, parallel) → layout
    calls: Callable[[str, _Speller], _Calls]  # (variant, speller) → a call writer for one grammar


# -- formats with JSON arguments ----------------------------------------------------------------------------------


@dataclass
class _JsonCalls:
    """Calls written as fixed markup around the arguments' JSON: ``shape(name)`` → (head pieces, tail); a
    ``None`` head piece stands for one digit (Kimi's call index)."""

    shape: Callable[[str], tuple[tuple[str | None, ...], str]]
    spell: _Speller

    def _markup(self, f: _Function) -> tuple[str, str, int]:
        head, tail = self.shape(f.name)
        pieces = [("[0-9]", 1) if piece is None else self.spell(piece) for piece in head]
        end = self.spell(tail)
        return " ".join(gbnf for gbnf, _ in pieces), end[0], sum(cost for _, cost in pieces) + end[1]

    def tightest(self, f: _Function) -> int:
        return self._markup(f)[2] + _tightest_json(f.parameters, f"f{f.index}-", self.spell.tokens_of)

    def write(self, grammar: _Grammar, f: _Function, chars: int | None, tier: str) -> str | None:
        head, tail, markup = self._markup(f)
        room = None if chars is None else chars - markup
        if room is not None and room < 0:
            return None
        root, text, longest = _json_rules(f.parameters, f"{tier}f{f.index}-", room, self.spell.tokens_of)
        if room is not None and longest > room:
            return None
        grammar.rules.append(text.strip())
        return grammar.add(f"{tier}call-{f.index}", f"{head} {root} {tail}")


def _object_head(name: str, args_key: str) -> str:
    return '{"name": ' + json.dumps(name, ensure_ascii=False) + f', "{args_key}": '


def _object_calls(args_key: str, before: str = "", after: str = "") -> Callable[[str, _Speller], _Calls]:
    """``{"name": …, "<args_key>": {…}}`` calls, with ``before``/``after`` around each."""
    return lambda variant, spell: _JsonCalls(
        lambda name: ((before + _object_head(name, args_key),), "}" + after), spell
    )


def _mistral_calls(variant: str, spell: _Speller) -> _Calls:
    if variant == "v3":
        return _object_calls("arguments")(variant, spell)
    return _JsonCalls(lambda name: ((f"[TOOL_CALLS]{name}[ARGS]",), ""), spell)


def _generic_layout(variant: str, parallel: bool) -> _Layout:
    return _Layout('{"tool_calls": [', "]}", ", ") if parallel else _Layout()


def _kimi_calls(variant: str, spell: _Speller) -> _Calls:
    return _JsonCalls(
        lambda name: (
            (f"<|tool_call_begin|>functions.{name}:", None, "<|tool_call_argument_begin|>"),
            "<|tool_call_end|>",
        ),
        spell,
    )


def _deepseek_r1_calls(variant: str, spell: _Speller) -> _Calls:
    return _JsonCalls(
        lambda name: (
            (f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n",),
            "\n```<｜tool▁call▁end｜>",
        ),
        spell,
    )


def _deepseek_v31_calls(variant: str, spell: _Speller) -> _Calls:
    return _JsonCalls(
        lambda name: ((f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>",), "<｜tool▁call▁end｜>"), spell
    )


# -- formats writing each parameter as tags -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Tags:
    """How one key/value format writes a call: ``param(key, raw)`` → (text before the value, text after it)."""

    param: Callable[[str, bool], tuple[str, str]]
    head: Callable[[str], str]
    tail: str


class _Value(Protocol):
    """One parameter's value: ``tight`` characters at least, ``full`` (None: unbounded) without a budget."""

    @property
    def tight(self) -> int: ...

    @property
    def full(self) -> int | None: ...

    def write(self, grammar: _Grammar, prefix: str, chars: int | None) -> str | None: ...


@dataclass
class _RawEnum:
    values: list[str]
    tight: int = 0
    full: int | None = 0

    def __post_init__(self) -> None:
        self.tight = self.full = max(len(v) for v in self.values)

    def write(self, grammar: _Grammar, prefix: str, chars: int | None) -> str | None:
        return grammar.add(f"{prefix}raw", " | ".join(lit(v) for v in self.values))


@dataclass
class _RawString:
    low: int
    high: int

    @property
    def tight(self) -> int:
        return self.low

    @property
    def full(self) -> int | None:
        return self.high

    def write(self, grammar: _Grammar, prefix: str, chars: int | None) -> str | None:
        high = self.high if chars is None else min(self.high, chars)
        if high < self.low:
            return None
        return grammar.add(f"{prefix}raw", f"[^<]{{{self.low},{high}}}")


@dataclass
class _JsonValue:
    schema: Any
    prefix: str
    tokens_of: TokensOf | None = None
    tight: int = 0
    full: int | None = None

    def __post_init__(self) -> None:
        self.tight = _tightest_json(self.schema, self.prefix, self.tokens_of)
        longest = _json_rules(self.schema, self.prefix, None, self.tokens_of)[2]
        self.full = None if longest == _TOO_LONG else longest

    def write(self, grammar: _Grammar, prefix: str, chars: int | None) -> str | None:
        fits_whole = chars is None or (self.full is not None and self.full <= chars)
        root, text, longest = _json_rules(self.schema, prefix, None if fits_whole else chars, self.tokens_of)
        if chars is not None and longest > chars:
            return None
        grammar.rules.append(text.strip())
        return root


@dataclass
class _Param:
    index: int  # in the schema's properties (names its rules)
    key: str
    required: bool
    before: str
    after: str
    value: _Value
    markup: int  # what ``before`` and ``after`` cost


@dataclass
class _TagCalls:
    """Calls writing each parameter as tags around its value (raw text for strings, JSON otherwise)."""

    tags: _Tags
    spell: _Speller
    _params: dict[int, list[_Param]] = field(default_factory=dict)

    def params(self, f: _Function) -> list[_Param]:
        """``f``'s parameters (required ones always, optional ones optionally, in schema order)."""
        if f.index not in self._params:
            self._params[f.index] = _tag_params(f, self.tags, self.spell)
        return self._params[f.index]

    def _fixed(self, f: _Function) -> int:
        return self.spell.cost(self.tags.head(f.name)) + self.spell.cost(self.tags.tail)

    def tightest(self, f: _Function) -> int:
        return self._fixed(f) + sum(p.markup + p.value.tight for p in self.params(f) if p.required)

    def write(self, grammar: _Grammar, f: _Function, chars: int | None, tier: str) -> str | None:
        params = list(self.params(f))
        shares: list[int | None] = [None] * len(params)
        if chars is not None:
            room = chars - self._fixed(f)
            while sum(p.markup + p.value.tight for p in params) > room:
                optional = [i for i, p in enumerate(params) if not p.required]
                if not optional:
                    return None
                del params[optional[-1]]  # the last optional parameter goes first
            values_room = room - sum(p.markup for p in params)
            shares = list(_share(values_room, [p.value for p in params]))
        draft = _Grammar()
        parts: list[str] = []
        for p, share in zip(params, shares, strict=True):
            value = p.value.write(draft, f"{tier}f{f.index}-p{p.index}-", share)
            if value is None:  # pragma: no cover - shares are at least the tightest values
                return None
            item = f"{self.spell(p.before)[0]} {value} {self.spell(p.after)[0]}"
            parts.append(item if p.required else f"({item})?")
        grammar.merge(draft)
        body = " ".join([self.spell(self.tags.head(f.name))[0], *parts, self.spell(self.tags.tail)[0]])
        return grammar.add(f"{tier}call-{f.index}", body)


def _share(room: int, values: list[_Value]) -> list[int]:
    """Characters for each value: at least its tightest, at most its full length, one common level between
    (the largest whose total fits ``room``)."""

    def at(level: int) -> list[int]:
        return [max(v.tight, level if v.full is None else min(level, v.full)) for v in values]

    low, high = 0, max(room, 0)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(at(mid)) <= room:
            low = mid
        else:
            high = mid - 1
    return at(low)


def _tag_params(f: _Function, tags: _Tags, spell: _Speller) -> list[_Param]:
    schema = f.parameters
    extra = sorted(set(schema) - _PARAMS_KEYWORDS)
    if schema.get("type", "object") != "object" or extra:
        what = extra[0] if extra else f"type {schema.get('type')!r}"
        raise UnsupportedFeature(
            f"function {f.name!r}: its parameters schema uses {what}, which this model's tool-call format "
            "(one tag per parameter) cannot enforce; describe the parameters as a plain object",
            param="tools",
        )
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    missing = sorted(required - set(properties))
    if missing:
        raise UnsupportedFeature(
            f"function {f.name!r}: required parameter {missing[0]!r} has no schema in 'properties'",
            param="tools",
        )
    defs: dict[str, Any] = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    params: list[_Param] = []
    for j, (key, prop) in enumerate(properties.items()):
        value = _param_value(f, j, key, prop, defs, spell.tokens_of)
        before, after = tags.param(key, isinstance(value, _RawEnum | _RawString))
        markup = spell.cost(before) + spell.cost(after)
        params.append(_Param(j, key, key in required, before, after, value, markup))
    return params


def _param_value(
    f: _Function, j: int, key: str, prop: Any, defs: dict[str, Any], tokens_of: TokensOf | None
) -> _Value:
    """One parameter's value: raw text (a string) or JSON."""
    if isinstance(prop, dict) and _is_raw_string(prop):
        return _raw_string(f.name, key, prop)
    schema = {**prop, **defs} if isinstance(prop, dict) and defs else prop
    return _JsonValue(schema, f"f{f.index}-p{j}-", tokens_of)


def _is_raw_string(prop: dict[str, Any]) -> bool:
    if prop.get("type") == "string":
        return True
    values = prop.get("enum", [prop["const"]] if "const" in prop else None)
    return (
        "type" not in prop
        and isinstance(values, list)
        and bool(values)
        and all(isinstance(v, str) for v in values)
    )


def _raw_string(function: str, key: str, prop: dict[str, Any]) -> _Value:
    unsupported = sorted(set(prop) - _RAW_STRING_KEYWORDS)
    if unsupported:
        raise UnsupportedFeature(
            f"function {function!r}, parameter {key!r}: the keyword {unsupported[0]!r} cannot be enforced on a "
            "string this model's tool-call format writes as raw text",
            param="tools",
        )
    values = prop.get("enum", [prop["const"]] if "const" in prop else None)
    if values is not None:
        strings = [v for v in values if isinstance(v, str) and "<" not in v]
        if not strings:
            raise UnsupportedFeature(
                f"function {function!r}, parameter {key!r}: no enum value can be written as raw text",
                param="tools",
            )
        return _RawEnum(strings)
    low = int(prop.get("minLength", 0))
    high = int(prop.get("maxLength", max(_RAW_STRING_CAP, low)))
    if high < low:
        raise InvalidRequest(
            f"function {function!r}, parameter {key!r}: maxLength < minLength", param="tools"
        )
    return _RawString(low, high)


def _glm_calls(variant: str, spell: _Speller) -> _Calls:
    nl = "" if variant == "compact" else "\n"
    return _TagCalls(
        _Tags(
            param=lambda k, raw: (f"{nl}<arg_key>{k}</arg_key>{nl}<arg_value>", "</arg_value>"),
            head=lambda name: "<tool_call>" + name,
            tail=nl + "</tool_call>",
        ),
        spell,
    )


_HY = ":opensource"


def _hunyuan_calls(variant: str, spell: _Speller) -> _Calls:
    return _TagCalls(
        _Tags(
            param=lambda k, raw: (
                f"<arg_key{_HY}>{k}</arg_key{_HY}>\n<arg_value{_HY}>",
                f"</arg_value{_HY}>\n",
            ),
            head=lambda name: f"<tool_call{_HY}>{name}<tool_sep{_HY}>\n",
            tail=f"</tool_call{_HY}>\n",
        ),
        spell,
    )


def _qwen3_coder_calls(variant: str, spell: _Speller) -> _Calls:
    return _TagCalls(
        _Tags(
            param=lambda k, raw: (f"<parameter={k}>\n", "\n</parameter>\n"),
            head=lambda name: f"<tool_call>\n<function={name}>\n",
            tail="</function>\n</tool_call>",
        ),
        spell,
    )


_DSML = "｜DSML｜"


def _deepseek_v32_calls(variant: str, spell: _Speller) -> _Calls:
    def param(k: str, raw: bool) -> tuple[str, str]:
        flag = "true" if raw else "false"
        return f'<{_DSML}parameter name={json.dumps(k)} string="{flag}">', f"</{_DSML}parameter>\n"

    return _TagCalls(
        _Tags(
            param=param,
            head=lambda name: f"<{_DSML}invoke name={json.dumps(name, ensure_ascii=False)}>\n",
            tail=f"</{_DSML}invoke>\n",
        ),
        spell,
    )


def _layout(begin: str = "", end: str = "", sep: str = "") -> Callable[[str, bool], _Layout]:
    return lambda variant, parallel: _Layout(begin, end, sep)


_FORMATS: dict[str, _Format] = {
    "hermes": _Format(_layout(sep="\n"), _object_calls("arguments", "<tool_call>\n", "\n</tool_call>")),
    "generic": _Format(_generic_layout, _object_calls("arguments")),
    "llama3": _Format(_layout(sep="; "), _object_calls("parameters")),
    "mistral": _Format(
        lambda variant, parallel: _Layout("[TOOL_CALLS][", "]", ", ") if variant == "v3" else _Layout(),
        _mistral_calls,
    ),
    "deepseek_r1": _Format(
        _layout("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "\n"), _deepseek_r1_calls
    ),
    "deepseek_v31": _Format(_layout("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"), _deepseek_v31_calls),
    "deepseek_v32": _Format(
        _layout(f"<{_DSML}function_calls>\n", f"</{_DSML}function_calls>"), _deepseek_v32_calls
    ),
    "kimi_k2": _Format(_layout("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"), _kimi_calls),
    "glm45": _Format(lambda variant, parallel: _Layout(sep="" if variant == "compact" else "\n"), _glm_calls),
    "hunyuan": _Format(_layout(f"<tool_calls{_HY}>\n", f"</tool_calls{_HY}>"), _hunyuan_calls),
    "qwen3_coder": _Format(_layout(sep="\n"), _qwen3_coder_calls),
}
