"""Recursive JSON Schemas (``$ref`` cycles): trees, JSON values, React elements, linked lists, mutual recursion.

Without a budget a cycle of references is a cycle of GBNF rules; under a budget it is unrolled as deep as the
budget allows, with one rule per (reference, level), so that every output still closes within the budget and
the grammar grows with the number of references, not with the number of paths through them. What no grammar can
generate (a reference that reaches itself before writing a character) and schemas nested deeper than the
compiler goes are refused with ``UnsupportedFeature`` naming ``$ref`` (HTTP 400), never a crash.
"""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest

from kaiyuan.chat.grammars import (
    _budget,
    _gbnf,
    _ir,
    _schema,
    json_schema_grammar,
    schema_to_gbnf_rules,
)
from kaiyuan.errors import UnsupportedFeature

JSON_VALUE = {
    "$defs": {
        "json": {
            "oneOf": [
                {"type": "null"},
                {"type": "boolean"},
                {"type": "number"},
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/$defs/json"}},
                {"type": "object", "additionalProperties": {"$ref": "#/$defs/json"}},
            ]
        }
    },
    "$ref": "#/$defs/json",
}

REACT_ELEMENT = {
    "$defs": {
        "ReactNode": {
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"$ref": "#/$defs/ReactElement"},
                {"type": "array", "items": {"$ref": "#/$defs/ReactNode"}},
            ]
        },
        "ReactElement": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "key": {"type": ["string", "null"]},
                "props": {
                    "type": "object",
                    "properties": {"children": {"$ref": "#/$defs/ReactNode"}},
                    "additionalProperties": True,
                },
            },
            "required": ["type", "props"],
        },
    },
    "$ref": "#/$defs/ReactElement",
}

# OpenAI's structured-output guide: a UI tree (recursion through the root) and a linked list.
UI = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["div", "button", "header", "section", "field", "form"]},
        "label": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#"}},
        "attributes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name", "value"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["type", "label", "children", "attributes"],
    "additionalProperties": False,
}

LINKED_LIST = {
    "type": "object",
    "properties": {"linked_list": {"$ref": "#/$defs/node"}},
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "additionalProperties": False,
            "required": ["next", "value"],
        }
    },
    "additionalProperties": False,
    "required": ["linked_list"],
}


def mutual_chain(n: int) -> dict[str, Any]:
    """``n`` definitions, each referring to the next and to the one three further on (many cycles)."""
    defs = {
        f"d{i}": {
            "type": "object",
            "properties": {
                "v": {"type": "string"},
                "next": {"anyOf": [{"$ref": f"#/$defs/d{(i + 1) % n}"}, {"type": "null"}]},
                "alt": {"type": "array", "items": {"$ref": f"#/$defs/d{(i + 3) % n}"}},
            },
            "required": ["v"],
        }
        for i in range(n)
    }
    return {"$defs": defs, "$ref": "#/$defs/d0"}


RECURSIVE_SCHEMAS = {
    "json_value": JSON_VALUE,
    "react_element": REACT_ELEMENT,
    "ui": UI,
    "linked_list": LINKED_LIST,
    "mutual_chain": mutual_chain(6),
}


def _validate(schema: dict[str, Any], text: str) -> None:
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))


# test_json_schema.py runs these too, with and without budgets (random walks through llama.cpp's grammar engine).


def test_deep_budget_allows_real_nesting(gbnf: Any) -> None:
    # Depth comes before long strings and many items: the wordy UI schema still nests at 1000 tokens ...
    grammar = json_schema_grammar(RECURSIVE_SCHEMAS["ui"], budget_tokens=1000)
    leaf = '{"type":"div","label":"a","children":[],"attributes":[]}'
    assert gbnf.accepts(grammar, f'{{"type":"form","label":"b","children":[{leaf},{leaf}],"attributes":[]}}')
    # ... and a linked list of four nodes fits in 200.
    chain = '{"value":1,"next":null}'
    for value in (2, 3, 4):
        chain = f'{{"value":{value},"next":{chain}}}'
    assert gbnf.accepts(json_schema_grammar(LINKED_LIST, budget_tokens=200), f'{{"linked_list":{chain}}}')
    assert gbnf.accepts(json_schema_grammar(JSON_VALUE, budget_tokens=1000), '{"a":[1,{"b":null}]}')


def _ref_rules(schema: dict[str, Any], t: int) -> int:
    rules = _gbnf.RuleSet()
    _schema.Compiler(schema, rules, _budget.limits_for(t, max_optional=None)).compile_root()
    return sum(1 for name in rules.rules if name.startswith("ref-"))


def test_unrolling_grows_with_references_times_depth() -> None:
    # Before: one rule per combination of references on the stack (236 for 4 definitions, minutes for 8).
    depth = _budget.limits_for(200, max_optional=None).depth
    assert depth is not None
    for n in (4, 8, 20):
        assert _ref_rules(mutual_chain(n), 200) <= n * (depth + 1)


def test_mutual_recursion_of_many_definitions_compiles_under_a_budget(gbnf: Any) -> None:
    schema = mutual_chain(20)
    grammar = json_schema_grammar(schema, budget_tokens=300)
    assert gbnf.parses(grammar)
    rng = random.Random(20)
    for _ in range(4):
        text = gbnf.random_output(grammar, rng, stop_bias=0.0, max_chars=3000)
        _validate(schema, text)
        assert len(text) <= 299


def test_reference_to_itself_before_any_character_is_refused_without_a_budget(gbnf: Any) -> None:
    schema = {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"}
    with pytest.raises(UnsupportedFeature, match=r"'\$ref'"):
        json_schema_grammar(schema)
    # under a budget the recursion is unrolled, so there is no cycle left for llama.cpp to refuse
    budgeted = json_schema_grammar(schema, budget_tokens=50)
    assert gbnf.parses(budgeted) and gbnf.accepts(budgeted, "null")


def test_left_recursion_finder() -> None:
    rules = {
        "a": _ir.Alt((_ir.Ref("b"), _ir.Lit("x"))),
        "b": _ir.Seq((_ir.Rep(_ir.Lit(" "), 0, 1), _ir.Ref("a"))),
        "c": _ir.Seq((_ir.Lit("["), _ir.Ref("c"), _ir.Lit("]"))),
    }
    assert _ir.left_recursive(rules) == "a"
    assert _ir.left_recursive({"c": rules["c"], "d": _ir.Lit("d")}) is None


@pytest.mark.parametrize("budget", [None, 100])
def test_schema_nested_deeper_than_the_compiler_goes_is_refused(budget: int | None) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(600):
        schema = {"type": "array", "items": schema}
    with pytest.raises(UnsupportedFeature, match=r"'\$ref'.*nests deeper"):
        json_schema_grammar(schema, budget_tokens=budget)


def test_recursive_tool_arguments_embed_with_a_prefix(gbnf: Any) -> None:
    root, rules = schema_to_gbnf_rules(REACT_ELEMENT, rule_prefix="f0-", budget_tokens=400)
    grammar = f"root ::= {root}\n{rules}"
    assert gbnf.parses(grammar)
    assert gbnf.accepts(grammar, '{"type":"p","props":{"children":["hi",{"type":"b","props":{}}]}}')
