"""The public entry points: JSON Schema / ``response_format`` -> llama.cpp GBNF text.

Owns: wiring compiler, budget fitting and GBNF writer together; reading OpenAI's ``response_format``.
Must not know: HTTP, the engine, chat templates.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from kaiyuan.chat.grammars import _budget, _gbnf
from kaiyuan.chat.grammars import _ir as ir
from kaiyuan.chat.grammars._keywords import PARAM, unsupported
from kaiyuan.chat.grammars._schema import Compiler, Limits
from kaiyuan.errors import InvalidRequest, UnsupportedFeature

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _compile(
    schema: Any,
    *,
    rule_prefix: str,
    budget_tokens: int | None,
    strict: bool,
    tokens_of: _gbnf.TokensOf | None = None,
    probes: _budget.Probes | None = None,
) -> tuple[str, _gbnf.RuleSet]:
    def build(limits: Limits) -> tuple[str, _gbnf.RuleSet]:
        rules = _gbnf.RuleSet(rule_prefix)
        root = Compiler(schema, rules, limits, strict=strict).compile_root("root")
        return root, rules

    if budget_tokens is None:
        root, rules = build(Limits())
    else:
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise InvalidRequest(
                f"the token budget must be a positive integer, got {budget_tokens!r}", param="max_tokens"
            )
        recursive = bool(Compiler(schema, _gbnf.RuleSet(rule_prefix), Limits(), strict=strict).cyclic())
        fitted = _budget.fit(
            build,
            budget_tokens,
            recursive=recursive,
            cost=lambda text: _gbnf.units(text, tokens_of),
            probes=probes,
        )
        root, rules = fitted.root, fitted.rules
    if not ir.satisfiable(ir.Ref(root), rules.rules):
        raise InvalidRequest("the JSON Schema admits no value (it contradicts itself)", param=PARAM)
    if ir.left_recursive(rules.rules) is not None:
        raise unsupported(
            "$ref",
            (),
            "a reference reaches itself again before any character of the value is written "
            "(e.g. an anyOf branch that is the definition itself), so no grammar can generate it",
        )
    return root, rules


@lru_cache(maxsize=256)
def _cached(
    schema_json: str,
    rule_prefix: str,
    budget_tokens: int | None,
    strict: bool,
    tokens_of: _gbnf.TokensOf | None,
) -> tuple[str, str]:
    """Compiling is deterministic, and clients repeat the same schema: keep the last few grammars (per budget),
    and per schema what fitting it to earlier budgets measured, so that a new ``max_tokens`` costs a few builds."""
    try:
        root, rules = _compile(
            json.loads(schema_json),
            rule_prefix=rule_prefix,
            budget_tokens=budget_tokens,
            strict=strict,
            tokens_of=tokens_of,
            probes=None
            if budget_tokens is None
            else _probes_of((schema_json, rule_prefix, strict, tokens_of)),
        )
        return root, _gbnf.write(rules, root, tokens_of)
    except RecursionError as exc:  # the compiler and the writer recurse along the schema's nesting
        raise _too_deep() from exc


_PROBES: OrderedDict[object, _budget.Probes] = OrderedDict()
_PROBES_LOCK = threading.Lock()
_MAX_SCHEMAS = 64


def _probes_of(key: object) -> _budget.Probes:
    """The measures kept for one schema (the last ``_MAX_SCHEMAS`` schemas)."""
    with _PROBES_LOCK:
        probes = _PROBES.pop(key, None)
        _PROBES[key] = probes = {} if probes is None else probes
        while len(_PROBES) > _MAX_SCHEMAS:
            _PROBES.popitem(last=False)
        return probes


def _too_deep() -> UnsupportedFeature:
    return unsupported(
        "$ref",
        (),
        "the schema nests deeper than kaiyuan compiles (nested schemas or a long chain of references); "
        "flatten it or move parts into $defs",
    )


def _grammar_for(
    schema: Any,
    *,
    rule_prefix: str,
    budget_tokens: int | None,
    strict: bool,
    tokens_of: _gbnf.TokensOf | None = None,
) -> tuple[str, str]:
    if not isinstance(schema, dict | bool):
        raise InvalidRequest("a JSON Schema must be an object or a boolean", param=PARAM)
    if budget_tokens is not None and (
        isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1
    ):
        raise InvalidRequest(
            f"the token budget must be a positive integer, got {budget_tokens!r}", param="max_tokens"
        )
    try:
        schema_json = json.dumps(schema)  # key order matters: properties are generated in it
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the JSON Schema is not JSON: {exc}", param=PARAM) from exc
    except RecursionError as exc:
        raise _too_deep() from exc
    return _cached(schema_json, rule_prefix, budget_tokens, strict, tokens_of)


def schema_to_gbnf_rules(
    schema: dict[str, Any],
    *,
    rule_prefix: str = "",
    budget_tokens: int | None = None,
    tokens_of: _gbnf.TokensOf | None = None,
) -> tuple[str, str]:
    """GBNF rules for one JSON value matching ``schema``, to embed in a larger grammar.

    Returns ``(root rule name, rules text)``; every rule name starts with ``rule_prefix`` (letters, digits and
    '-'), so several schemas can live in one grammar. The value has no surrounding whitespace. With
    ``budget_tokens``, every value the rules allow fits in that many tokens (see ``docs/structured-output.md``).
    ``tokens_of`` (text → the model's tokens that spell it exactly; hashable, it is part of the cache key) lets
    fixed text (keys, punctuation) be written as those tokens where that takes fewer units than characters;
    the budget then counts such a literal by its tokens.
    Raises ``UnsupportedFeature`` (naming the keyword and its JSON path) for what cannot be enforced and
    ``InvalidRequest`` for a malformed schema.
    """
    return _grammar_for(
        schema, rule_prefix=rule_prefix, budget_tokens=budget_tokens, strict=False, tokens_of=tokens_of
    )


def json_schema_grammar(
    schema: dict[str, Any],
    *,
    budget_tokens: int | None = None,
    strict: bool = False,
    tokens_of: _gbnf.TokensOf | None = None,
) -> str:
    """A complete grammar (root rule ``root``) for a JSON value matching ``schema``.

    ``strict`` (OpenAI's ``strict: true``) treats every object as ``additionalProperties: false``.
    ``tokens_of``: as for :func:`schema_to_gbnf_rules` (the budget counts fixed text in the model's tokens).
    """
    return _grammar_for(
        schema, rule_prefix="", budget_tokens=budget_tokens, strict=strict, tokens_of=tokens_of
    )[1]


def json_object_grammar(*, budget_tokens: int | None = None, tokens_of: _gbnf.TokensOf | None = None) -> str:
    """A complete grammar for any JSON object (``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar(_ANY_OBJECT, budget_tokens=budget_tokens, tokens_of=tokens_of)


def response_format_grammar(
    response_format: dict[str, Any] | None,
    *,
    budget_tokens: int | None,
    tokens_of: _gbnf.TokensOf | None = None,
) -> str | None:
    """The grammar for an OpenAI ``response_format`` (None for plain text).

    Accepts ``{"type": "text"}``, ``{"type": "json_object"}`` (optionally with llama.cpp's ``"schema"``) and
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``. ``tokens_of`` (the model's
    vocabulary, see :func:`schema_to_gbnf_rules`) makes the budget count keys and punctuation in the tokens
    the model writes them with, instead of one token per character.
    """
    if response_format is None:
        return None
    if budget_tokens is None:
        tokens_of = (
            None  # spelling text as tokens only buys budget; without one, leave the model its own choice
        )
    if not isinstance(response_format, dict):
        raise InvalidRequest("response_format must be an object", param=PARAM)
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            return json_object_grammar(budget_tokens=budget_tokens, tokens_of=tokens_of)
        return json_schema_grammar(schema, budget_tokens=budget_tokens, tokens_of=tokens_of)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                "response_format.json_schema must be an object with 'name' and 'schema'", param=PARAM
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest("response_format.json_schema.strict must be a boolean", param=PARAM)
        schema = spec.get("schema")
        if schema is None:
            return json_object_grammar(budget_tokens=budget_tokens, tokens_of=tokens_of)
        if not isinstance(schema, dict | bool):
            raise InvalidRequest(
                "response_format.json_schema.schema must be a JSON Schema object", param=PARAM
            )
        return json_schema_grammar(
            schema,  # type: ignore[arg-type]
            budget_tokens=budget_tokens,
            strict=bool(strict),
            tokens_of=tokens_of,
        )
    raise InvalidRequest(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}", param=PARAM
    )
