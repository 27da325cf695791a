"""OpenAI ``response_format`` -> grammar, and the package's public surface."""

from __future__ import annotations

from typing import Any

import pytest

import kaiyuan.chat.grammars as grammars
from kaiyuan.chat.grammars import response_format_grammar
from kaiyuan.errors import InvalidRequest

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "tags": {"type": "object"}},
    "required": ["name"],
}


def test_public_names_are_sorted_and_exported() -> None:
    assert grammars.__all__ == sorted(grammars.__all__)
    assert set(grammars.__all__) == {
        "json_object_grammar",
        "json_schema_grammar",
        "response_format_grammar",
        "schema_to_gbnf_rules",
    }


@pytest.mark.parametrize("fmt", [None, {"type": "text"}])
def test_text_needs_no_grammar(fmt: dict[str, Any] | None) -> None:
    assert response_format_grammar(fmt, budget_tokens=100) is None


def test_json_object(gbnf: Any) -> None:
    grammar = response_format_grammar({"type": "json_object"}, budget_tokens=None)
    assert grammar is not None and gbnf.parses(grammar)
    assert gbnf.accepts(grammar, '{"any": ["thing", 1, null]}')
    assert not gbnf.accepts(grammar, '"just a string"')


def test_json_object_with_llama_cpp_schema_extension(gbnf: Any) -> None:
    grammar = response_format_grammar({"type": "json_object", "schema": PERSON}, budget_tokens=None)
    assert grammar is not None
    assert gbnf.accepts(grammar, '{"name": "x"}') and not gbnf.accepts(grammar, '{"tags": {}}')


def test_json_schema_strict_and_not(gbnf: Any) -> None:
    loose = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}, budget_tokens=None
    )
    strict = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}},
        budget_tokens=None,
    )
    assert loose is not None and strict is not None
    assert gbnf.accepts(loose, '{"name": "x", "tags": {"k": 1}}')
    assert not gbnf.accepts(strict, '{"name": "x", "tags": {"k": 1}}')
    assert gbnf.accepts(strict, '{"name": "x", "tags": {}}')


def test_json_schema_without_schema_is_any_object(gbnf: Any) -> None:
    grammar = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "free"}}, budget_tokens=None
    )
    assert grammar is not None and gbnf.accepts(grammar, '{"a": 1}')


def test_budget_is_applied(gbnf: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    unbounded = response_format_grammar(fmt, budget_tokens=None)
    bounded = response_format_grammar(fmt, budget_tokens=30)
    assert unbounded is not None and bounded is not None
    assert gbnf.accepts(unbounded, '{"name": "' + "x" * 100 + '"}')
    assert not gbnf.accepts(bounded, '{"name": "' + "x" * 100 + '"}')
    assert gbnf.accepts(bounded, '{"name":"short"}')


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ({"type": "yaml"}, "response_format.type"),
        ("json", "must be an object"),
        ({"type": "json_schema"}, "json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": PERSON, "strict": "yes"}}, "strict"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "schema"),
    ],
)
def test_bad_response_format(fmt: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        response_format_grammar(fmt, budget_tokens=None)
    assert needle in info.value.message and info.value.param == "response_format"


@pytest.mark.parametrize("budget", [0, -5, True, 2.5])
def test_bad_budget(budget: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        response_format_grammar({"type": "json_object"}, budget_tokens=budget)
    assert info.value.param == "max_tokens"
