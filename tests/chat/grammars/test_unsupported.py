"""What kaiyuan cannot enforce is refused - naming the keyword and where it sits - never silently widened."""

from __future__ import annotations

from typing import Any

import pytest

from kaiyuan.chat.grammars import json_schema_grammar, schema_to_gbnf_rules
from kaiyuan.errors import InvalidRequest, UnsupportedFeature

OBJ = "object"

UNSUPPORTED: list[tuple[dict[str, Any], str, str]] = [
    ({"type": OBJ, "properties": {"a": {"not": {"type": "string"}}}}, "not", "#/properties/a"),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if", "#"),
    ({"type": "array", "contains": {"const": 1}}, "contains", "#"),
    (
        {"type": OBJ, "properties": {"a": {}, "b": {}}, "dependentRequired": {"a": ["b"]}},
        "dependentRequired",
        "#",
    ),
    ({"type": OBJ, "patternProperties": {"^x-": {"type": "string"}}}, "patternProperties", "#"),
    ({"type": OBJ, "properties": {"r": {"$ref": "https://example.com/s.json"}}}, "$ref", "#/properties/r"),
    ({"type": OBJ, "properties": {"r": {"$ref": "#anchor"}}}, "$ref", "#/properties/r"),
    ({"$defs": {"x": {"$dynamicRef": "#meta"}}, "$ref": "#/$defs/x"}, "$dynamicRef", "#/$defs/x"),
    ({"type": "string", "format": "ipv6"}, "format", "#"),
    ({"type": "string", "format": "credit-card"}, "format", "#"),
    ({"type": "integer", "multipleOf": 5}, "multipleOf", "#"),
    ({"type": "number", "multipleOf": 0.01}, "multipleOf", "#"),
    ({"type": "number", "minimum": 0.1, "maximum": 0.9}, "minimum", "#"),
    (
        {
            "type": OBJ,
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 2}
            },
        },
        "uniqueItems",
        "#/properties/tags",
    ),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "oneOf", "#/oneOf/0"),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, "oneOf", "#/oneOf/0"),
    # llama-server turns this into "any object"; the branches overlap ({"a":1,"b":2} matches both), so refuse.
    (
        {
            "type": OBJ,
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        "oneOf",
        "#/oneOf/0",
    ),
    ({"type": OBJ, "unevaluatedProperties": {"type": "string"}}, "unevaluatedProperties", "#"),
    (
        {
            "type": OBJ,
            "properties": {"a": {}},
            "additionalProperties": {"type": "integer"},
            "propertyNames": {"maxLength": 3},
        },
        "propertyNames",
        "#",
    ),
    ({"allOf": [{"type": "string", "pattern": "^a"}, {"pattern": "b$"}]}, "pattern", "#/allOf/1"),
    ({"type": "string", "pattern": "^[a-z]+$", "format": "email"}, "pattern", "#"),
    (
        {"type": OBJ, "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "minProperties": 1},
        "minProperties",
        "#",
    ),
]


@pytest.mark.parametrize(
    ("schema", "keyword", "path"), UNSUPPORTED, ids=[f"{k}@{p}" for _, k, p in UNSUPPORTED]
)
def test_refused_with_keyword_and_path(schema: dict[str, Any], keyword: str, path: str) -> None:
    for call in (
        lambda: json_schema_grammar(schema),
        lambda: schema_to_gbnf_rules(schema, budget_tokens=200),
    ):
        with pytest.raises(UnsupportedFeature) as info:
            call()
        message = info.value.message
        assert f"'{keyword}'" in message and f" at {path} " in message, message
        assert info.value.param == "response_format"
        assert info.value.http_status == 400


INVALID: list[tuple[Any, str]] = [
    ({"type": "strnig"}, "unknown type"),
    ({"enum": []}, "enum"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"type": "string", "minLength": -1}, "minLength"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength"),
    ({"type": OBJ, "required": "a"}, "required"),
    ({"type": OBJ, "properties": {"a": False}, "required": ["a"]}, "admits no value"),
    ({"type": OBJ, "required": ["x"], "additionalProperties": False}, "required"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no whole number"),
    ({"allOf": [{"enum": [1, 2]}, {"enum": [3]}]}, "enum"),
    (["not", "a", "schema"], "must be an object"),
    ({"type": "string", "enum": [1, 2]}, "enum"),
]


@pytest.mark.parametrize(("schema", "needle"), INVALID, ids=[n for _, n in INVALID])
def test_malformed_or_contradictory_schemas_are_bad_requests(schema: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        json_schema_grammar(schema)
    assert needle in info.value.message
    assert info.value.param == "response_format"


PROVABLE_ONE_OF: list[dict[str, Any]] = [
    {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
    {"oneOf": [{"const": "a"}, {"const": "b"}, {"enum": [1, 2]}]},
    {
        "oneOf": [
            {
                "type": OBJ,
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
                "additionalProperties": False,
            },
            {
                "type": OBJ,
                "properties": {"b": {"type": "integer"}},
                "required": ["b"],
                "additionalProperties": False,
            },
        ]
    },
    {
        "type": OBJ,
        "oneOf": [
            {"properties": {"t": {"const": "x"}}, "required": ["t"]},
            {"properties": {"t": {"const": "y"}}, "required": ["t"]},
        ],
    },
]


@pytest.mark.parametrize("schema", PROVABLE_ONE_OF)
def test_exclusive_one_of_is_accepted(gbnf: Any, schema: dict[str, Any]) -> None:
    assert gbnf.parses(json_schema_grammar(schema))
