"""Schemas -> grammars: llama.cpp parses every grammar, and every output it allows parses and validates.

Outputs are drawn by a random walk through the grammar inside llama.cpp's own grammar engine (see conftest),
so these tests check the GBNF text llama.cpp actually runs, not kaiyuan's internal tree.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pytest

from kaiyuan.chat.grammars import (
    _api,
    _gbnf,
    _ir,
    json_object_grammar,
    json_schema_grammar,
    schema_to_gbnf_rules,
)
from tests.chat.grammars.test_recursive_schemas import RECURSIVE_SCHEMAS

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER

ADDRESS = {
    "type": "object",
    "properties": {
        "street": {"type": "string", "maxLength": 40},
        "city": {"type": "string"},
        "zip": {"type": "string", "pattern": r"^\d{5}(-\d{4})?$"},
        "country": {"enum": ["CN", "US", "DE", "FR"]},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "scalars": {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
        },
        "required": ["s", "i", "n", "b", "z"],
    },
    "nested_optional": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "home": ADDRESS,
            "work": ADDRESS,
            "note": {"type": "string", "minLength": 2, "maxLength": 12},
        },
        "required": ["id"],
    },
    "all_optional": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
    },
    "defs_and_refs": {
        "$defs": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "email": {"type": "string", "format": "email"}},
                "required": ["name"],
            }
        },
        "type": "object",
        "properties": {
            "author": {"$ref": "#/$defs/person"},
            "reviewers": {"type": "array", "items": {"$ref": "#/$defs/person"}},
        },
        "required": ["author", "reviewers"],
    },
    "recursive_tree": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "maxLength": 8},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["label", "children"],
            }
        },
        "$ref": "#/$defs/node",
    },
    "recursive_root": {
        "type": "object",
        "properties": {"value": {"type": "integer"}, "next": {"$ref": "#"}},
        "required": ["value"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "two_to_four": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
            "tuple": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "number"}],
                "items": False,
                "minItems": 1,
            },
            "unique_tags": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "uniqueItems": True,
                "minItems": 1,
            },
            "unique_free": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
        "required": ["two_to_four", "tuple", "unique_tags", "unique_free"],
    },
    "draft7_tuple": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"const": "x"}, {"type": "boolean"}],
        "additionalItems": {"type": "null"},
        "maxItems": 4,
    },
    "enum_const_mixed": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["open", "closed", 3, None]},
            "version": {"const": 2},
            "meta": {"const": {"k": [1, "two"]}},
            "quote": {"enum": ['say "hi"', "back\\slash", "行"]},
        },
        "required": ["status", "version", "meta", "quote"],
    },
    "nullable_and_type_lists": {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"], "maxLength": 5},
            "b": {"type": "integer", "nullable": True},
            "c": {"type": ["integer", "number", "boolean"]},
        },
        "required": ["a", "b", "c"],
    },
    "integer_bounds": {
        "type": "object",
        "properties": {
            "pct": {"type": "integer", "minimum": 0, "maximum": 100},
            "neg": {"type": "integer", "minimum": -273, "maximum": -3},
            "span": {"type": "integer", "minimum": -15, "maximum": 1234},
            "excl": {"type": "integer", "exclusiveMinimum": 9, "exclusiveMaximum": 1000},
            "big": {"type": "integer", "minimum": 1000000},
            "draft4": {"type": "integer", "minimum": 5, "exclusiveMinimum": True, "maximum": 8},
        },
        "required": ["pct", "neg", "span", "excl", "big", "draft4"],
    },
    "number_bounds": {
        "type": "object",
        "properties": {
            "prob": {"type": "number", "minimum": 0, "maximum": 1},
            "price": {"type": "number", "exclusiveMinimum": 0},
            "temp": {"type": "number", "minimum": -40.5, "maximum": 60},
            "below": {"type": "number", "exclusiveMaximum": -2},
        },
        "required": ["prob", "price", "temp", "below"],
    },
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f}
            for f in (
                "date",
                "time",
                "date-time",
                "uuid",
                "email",
                "uri",
                "uri-reference",
                "hostname",
                "ipv4",
            )
        },
        "required": [
            "date",
            "time",
            "date-time",
            "uuid",
            "email",
            "uri",
            "uri-reference",
            "hostname",
            "ipv4",
        ],
    },
    "patterns": {
        "type": "object",
        "properties": {
            "sku": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
            "slug": {"type": "string", "pattern": r"^[a-z0-9]+(?:-[a-z0-9]+)*$", "maxLength": 30},
            "word": {"type": "string", "pattern": r"\w+"},
            "phone": {"type": "string", "pattern": r"^\+?[0-9 ()-]{7,15}$"},
            "hex": {"type": "string", "pattern": r"^#(?:[0-9a-fA-F]{3}){1,2}$"},
            "not_digit": {"type": "string", "pattern": r"^\D{2,3}$"},
            "quoted": {"type": "string", "pattern": r'^"[^"\\]*"$'},
            "alt": {"type": "string", "pattern": r"^(cat|dog|bird)s?$"},
        },
        "required": ["sku", "slug", "word", "phone", "hex", "not_digit", "quoted", "alt"],
    },
    "any_of_beside_properties": {
        "type": "object",
        "properties": {
            "email": {"type": "string", "format": "email"},
            "phone": {"type": "string", "pattern": r"^\d{6,10}$"},
        },
        "anyOf": [{"required": ["email"]}, {"required": ["phone"]}],
        "additionalProperties": False,
    },
    "one_of_discriminated": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}},
                "required": ["kind", "r"],
            },
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "rect"},
                    "w": {"type": "number", "minimum": 0},
                    "h": {"type": "number", "minimum": 0},
                },
                "required": ["kind", "w", "h"],
            },
        ]
    },
    "one_of_types": {
        "type": "object",
        "properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}},
        "required": ["v"],
    },
    "all_of_merge": {
        "$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "allOf": [
            {"$ref": "#/$defs/base"},
            {"properties": {"name": {"type": "string", "maxLength": 10}}, "required": ["name"]},
        ],
    },
    "ref_with_siblings": {
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
        "type": "object",
        "properties": {"c": {"$ref": "#/$defs/code", "maxLength": 3, "description": "short code"}},
        "required": ["c"],
    },
    "maps": {
        "type": "object",
        "properties": {
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 10},
                "maxProperties": 3,
            },
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "minProperties": 1,
                "propertyNames": {"pattern": "^[a-z]{1,6}$"},
            },
            "mixed": {
                "type": "object",
                "properties": {"fixed": {"type": "boolean"}},
                "additionalProperties": {"type": "integer"},
            },
        },
        "required": ["labels", "counts", "mixed"],
    },
    "free_form": {
        "type": "object",
        "properties": {"anything": {}, "obj": {"type": "object"}, "arr": {"type": "array"}},
        "required": ["anything", "obj", "arr"],
    },
    "untyped_inference": {
        "properties": {
            "x": {"minLength": 2, "maxLength": 3},
            "y": {"minimum": 1, "maximum": 3},
            "z": {"items": {"type": "boolean"}, "maxItems": 2},
        },
        "required": ["x", "y", "z"],
    },
    "escaped_names": {
        "type": "object",
        "properties": {
            'we"ird': {"type": "integer"},
            "back\\slash": {"type": "boolean"},
            "中文": {"type": "string", "maxLength": 3},
        },
        "required": ['we"ird', "back\\slash", "中文"],
    },
    "top_level_array": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"q": {"type": "string"}, "a": {"type": "integer"}},
            "required": ["q", "a"],
        },
        "minItems": 1,
    },
    "top_level_string_enum": {"enum": ["yes", "no"]},
}


SCHEMAS.update({f"recursive_{name}": schema for name, schema in RECURSIVE_SCHEMAS.items()})


def _validate(schema: dict[str, Any], text: str) -> None:
    value = json.loads(text)
    jsonschema.validators.validator_for(schema)(schema, format_checker=FORMATS).validate(value)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_unbudgeted_outputs_validate(gbnf: Any, name: str) -> None:
    schema = SCHEMAS[name]
    grammar = json_schema_grammar(schema)
    assert gbnf.parses(grammar), grammar
    rng = random.Random(name)
    for _ in range(6):
        text = gbnf.random_output(grammar, rng, stop_bias=0.5, max_chars=20000)
        _validate(schema, text)


@pytest.mark.parametrize("budget", [40, 120, 400])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_budgeted_outputs_fit_and_validate(gbnf: Any, name: str, budget: int) -> None:
    schema = SCHEMAS[name]
    grammar = json_schema_grammar(schema, budget_tokens=budget)
    assert gbnf.parses(grammar), grammar
    rng = random.Random(f"{name}-{budget}")
    for _ in range(4):
        # stop_bias 0: the walk goes on as long as the grammar lets it - the longest outputs a loop could make.
        text = gbnf.random_output(grammar, rng, stop_bias=0.0, max_chars=4 * budget + 2000)
        _validate(schema, text)
        assert len(text) <= budget - 1 or _tightest_longest(schema) > budget - 1, text


def _tightest_longest(schema: dict[str, Any]) -> int | None:
    """Longest output of the tightest grammar kaiyuan builds (when even that exceeds a budget, it is best effort)."""
    root, rules = _api._compile(schema, rule_prefix="", budget_tokens=1, strict=False)
    return _ir.measure(_ir.Ref(root), rules.rules).hi


def test_budget_grows_strings_with_the_budget() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    small = json_schema_grammar(schema, budget_tokens=50)
    large = json_schema_grammar(schema, budget_tokens=500)
    assert "char{0,37}" in small  # 49 characters minus {"text":, one space, two quotes and }
    assert "char{0,487}" in large


def test_budget_limits_optional_properties_before_starving_strings(gbnf: Any) -> None:
    props = {f"field_number_{i}": {"type": "string"} for i in range(12)}
    schema = {"type": "object", "properties": props, "required": ["field_number_0"]}
    grammar = json_schema_grammar(schema, budget_tokens=160)
    lengths = [int(n) for n in re.findall(r"char\{0,(\d+)\}", grammar)]
    assert lengths and min(lengths) >= 16, grammar  # strings keep room ...
    rng = random.Random(3)
    for _ in range(10):
        text = gbnf.random_output(grammar, rng, stop_bias=0.0, max_chars=400)
        assert len(text) <= 159
        _validate(schema, text)
        assert len(json.loads(text)) <= 5  # ... because one object writes at most 4 optional properties here


def test_unbudgeted_whitespace_is_bounded() -> None:
    grammar = json_schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}})
    ws_rules = [line for line in grammar.splitlines() if line.startswith(("ws ::=", "rep ::="))]
    assert ws_rules and all("*" not in line and "+" not in line for line in ws_rules), ws_rules


def test_unbudgeted_accepts_and_rejects_exact_documents(gbnf: Any) -> None:
    grammar = json_schema_grammar(SCHEMAS["nested_optional"])
    assert gbnf.accepts(grammar, '{"id": 7}')
    assert gbnf.accepts(
        grammar, '{\n  "id": 7,\n  "home": {"city": "Xi\'an", "country": "CN"},\n  "note": "ok"\n}'
    )
    assert not gbnf.accepts(grammar, '{"id": 0}')  # minimum 1
    assert not gbnf.accepts(grammar, '{"home": {"city": "a", "country": "CN"}}')  # id required
    assert not gbnf.accepts(grammar, '{"id": 1, "home": {"city": "a", "country": "UK"}}')  # enum
    assert not gbnf.accepts(grammar, '{"id": 1, "note": "x"}')  # minLength 2
    assert not gbnf.accepts(grammar, '{"id": 1, "home": {"city": "a", "country": "CN", "x": 1}}')  # closed


def test_integer_ranges_are_exact(gbnf: Any) -> None:
    grammar = json_schema_grammar({"type": "integer", "minimum": -37, "maximum": 1205})
    for n in range(-60, 1300):
        assert gbnf.accepts(grammar, str(n)) == (-37 <= n <= 1205), n
    assert not gbnf.accepts(grammar, "007")


def test_exclusive_number_bounds(gbnf: Any) -> None:
    grammar = json_schema_grammar({"type": "number", "exclusiveMinimum": 0, "maximum": 2})
    for text, ok in [
        ("0", False),
        ("0.0", False),
        ("0.5", True),
        ("1", True),
        ("2", True),
        ("2.5", False),
        ("-0.1", False),
        ("1.999", True),
    ]:
        assert gbnf.accepts(grammar, text) == ok, text


def test_open_object_with_declared_properties_generates_only_them(gbnf: Any) -> None:
    grammar = json_schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert gbnf.accepts(grammar, '{"a": 1}')
    assert not gbnf.accepts(grammar, '{"a": 1, "b": 2}')


def test_strict_closes_free_objects(gbnf: Any) -> None:
    schema = {"type": "object", "properties": {"meta": {"type": "object"}}, "required": ["meta"]}
    assert gbnf.accepts(json_schema_grammar(schema), '{"meta": {"x": 1}}')
    strict = json_schema_grammar(schema, strict=True)
    assert gbnf.accepts(strict, '{"meta": {}}')
    assert not gbnf.accepts(strict, '{"meta": {"x": 1}}')


def test_map_keys_never_repeat_declared_names(gbnf: Any) -> None:
    grammar = json_schema_grammar(SCHEMAS["maps"]["properties"]["mixed"])
    assert gbnf.accepts(grammar, '{"fixed": true, "other": 3}')
    assert gbnf.accepts(grammar, '{"fixe": 1, "fixedx": 2}')
    assert not gbnf.accepts(grammar, '{"fixed": true, "fixed": 3}')


def test_json_object_grammar(gbnf: Any) -> None:
    grammar = json_object_grammar()
    assert gbnf.parses(grammar)
    assert gbnf.accepts(grammar, '{"a": [1, {"b": null}], "c": "x"}')
    assert not gbnf.accepts(grammar, "[1]")
    rng = random.Random(5)
    for budget in (30, 100):
        budgeted = json_object_grammar(budget_tokens=budget)
        for _ in range(10):
            text = gbnf.random_output(budgeted, rng, stop_bias=0.0, max_chars=budget)
            assert isinstance(json.loads(text), dict) and len(text) < budget


def test_embeddable_rules_use_the_prefix(gbnf: Any) -> None:
    root_a, rules_a = schema_to_gbnf_rules(SCHEMAS["defs_and_refs"], rule_prefix="tool-a-")
    root_b, rules_b = schema_to_gbnf_rules(
        SCHEMAS["recursive_root"], rule_prefix="tool-b-", budget_tokens=100
    )
    assert root_a.startswith("tool-a-") and root_b.startswith("tool-b-")
    for rules, prefix in ((rules_a, "tool-a-"), (rules_b, "tool-b-")):
        assert all(line.startswith(prefix) for line in rules.splitlines())
    grammar = f'root ::= "A:" {root_a} | "B:" {root_b}\n{rules_a}{rules_b}'
    assert gbnf.parses(grammar)
    assert gbnf.accepts(grammar, 'B:{"value":1,"next":{"value":2}}')
    assert gbnf.accepts(grammar, 'A:{"author": {"name": "x"}, "reviewers": []}')


def test_bad_prefix_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="rule_prefix"):
        schema_to_gbnf_rules({"type": "string"}, rule_prefix="tool_a")


def test_large_max_length_is_written_in_blocks(gbnf: Any) -> None:
    grammar = json_schema_grammar({"type": "string", "minLength": 2500, "maxLength": 5000})
    assert gbnf.parses(grammar)
    assert gbnf.accepts(grammar, json.dumps("x" * 2500))
    assert gbnf.accepts(grammar, json.dumps("y" * 5000))
    assert gbnf.accepts(grammar, json.dumps("y" * 3333))
    assert not gbnf.accepts(grammar, json.dumps("y" * 5001))
    assert not gbnf.accepts(grammar, json.dumps("y" * 2499))


@pytest.mark.parametrize("name", ["nested_optional", "defs_and_refs", "recursive_react_element", "free_form"])
def test_budgets_fitted_from_earlier_measures_match_a_fresh_fit(name: str) -> None:
    """The per-schema measures kept between budgets only narrow the search: every budget gets the grammar a
    fit from scratch gives, in whatever order the budgets come."""
    schema = SCHEMAS[name]
    budgets = list(range(20, 400, 23))
    random.Random(name).shuffle(budgets)
    _api._PROBES.clear()
    for budget in budgets:
        kept = json_schema_grammar(schema, budget_tokens=budget)
        root, rules = _api._compile(schema, rule_prefix="", budget_tokens=budget, strict=False)
        assert kept == _gbnf.write(rules, root), budget
    assert len(_api._PROBES) == 1
