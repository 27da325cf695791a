"""OpenAI ``response_format`` -> grammar, and the package's public surface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import kaiyuan.chat.grammars as grammars
from kaiyuan.chat._gbnf_length import longest_output, shortest_output
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


# -- the budget in the model's own tokens (issue 14: as forced tool calls count theirs) ------------------------------

ORDER = {
    "type": "object",
    "properties": {
        "customer_name": {"type": "string"},
        "shipping_address": {"type": "string"},
        "order_status": {"enum": ["pending", "shipped", "delivered"]},
        "is_gift_wrapped": {"type": "boolean"},
    },
    "required": ["customer_name", "shipping_address", "order_status", "is_gift_wrapped"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def smollm2_vocabulary() -> Iterator[Any]:
    from kaiyuan.chat._vocabulary import vocabulary
    from kaiyuan.engine.llama_cpp import LlamaCppEngine
    from tests.chat.grammars._llama_oracle import smollm2_path

    engine = LlamaCppEngine(
        str(smollm2_path()), flash_attn="off", n_ctx=256, n_parallel=1, n_threads=1, n_batch=64
    )
    yield vocabulary(engine)
    engine.close()


def _string_room(grammar: str) -> int:
    """How many characters the grammar leaves the ``customer_name`` value (its rule's longest less shortest)."""
    rule = "prop-customer-name"
    longest = longest_output(grammar, rule)
    assert longest is not None
    return longest - shortest_output(grammar, rule)


@pytest.mark.parametrize("kind", ["json_schema", "json_object"])
def test_budget_counts_keys_and_punctuation_in_the_models_tokens(
    gbnf: Any, smollm2_vocabulary: Any, kind: str
) -> None:
    fmt: dict[str, Any] = (
        {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER}}
        if kind == "json_schema"
        else {"type": "json_object", "schema": ORDER}
    )
    for budget in (38, 45, 60, 100):
        in_chars = response_format_grammar(fmt, budget_tokens=budget)
        in_tokens = response_format_grammar(fmt, budget_tokens=budget, tokens_of=smollm2_vocabulary.tokens_of)
        assert in_chars is not None and in_tokens is not None
        assert gbnf.parses(in_tokens), in_tokens
        # Every output closes within the budget: a token element is one token, any other character at most one.
        longest = longest_output(in_tokens)
        assert longest is not None and longest <= budget - 1, (budget, longest)
        # The smallest document is 90 characters but 36 of SmolLM2's tokens: counted in characters, the strings
        # get no room below 90 tokens (and below 37 the JSON may be cut off); counted in tokens, they do.
        if budget >= 45:
            assert _string_room(in_tokens) >= 3 + _string_room(in_chars), in_tokens
        if budget < 90:
            assert _string_room(in_chars) == 0


def test_without_a_budget_the_model_keeps_its_own_spelling(smollm2_vocabulary: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER}}
    grammar = response_format_grammar(fmt, budget_tokens=None, tokens_of=smollm2_vocabulary.tokens_of)
    assert grammar is not None and "<[" not in grammar
    assert grammar == response_format_grammar(fmt, budget_tokens=None)
