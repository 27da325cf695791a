"""End to end with the real engine: SmolLM2-135M under kaiyuan's grammars answers complete, valid JSON - also
when ``max_tokens`` is small enough that an unbounded grammar lets it loop until the cut-off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from kaiyuan.chat.grammars import json_schema_grammar, response_format_grammar
from tests.chat.grammars._llama_oracle import smollm2_path

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

ORDER = {
    "$defs": {
        "money": {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "minimum": 0},
                "currency": {"enum": ["USD", "EUR", "CNY"]},
            },
            "required": ["amount", "currency"],
            "additionalProperties": False,
        },
        "line": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                "price": {"$ref": "#/$defs/money"},
                "gift": {"type": "boolean"},
            },
            "required": ["sku", "qty", "price"],
        },
    },
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "status": {"enum": ["pending", "paid", "shipped"]},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1},
        "note": {"type": "string"},
        "placed": {"type": "string", "format": "date"},
    },
    "required": ["customer", "status", "lines"],
}

CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "role": {"enum": ["engineer", "designer", "manager"]},
        "skills": {"type": "array", "items": {"type": "string"}},
        "email": {"type": "string", "format": "email"},
        "remote": {"type": "boolean"},
    },
    "required": ["name", "role"],
}

MENU = {
    "$defs": {
        "entry": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
            },
            "required": ["label"],
        }
    },
    "type": "object",
    "properties": {
        "site": {"type": "string"},
        "menu": {"type": "array", "items": {"$ref": "#/$defs/entry"}, "minItems": 1},
    },
    "required": ["site", "menu"],
}


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    model = llama_cpp.Llama(
        model_path=str(smollm2_path()), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False, seed=7
    )
    yield model
    model.close()


def _ask(llm: Any, request: str, grammar: str, max_tokens: int) -> tuple[str, str]:
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": request}],
        grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False),
        max_tokens=max_tokens,
        temperature=0.8,
        seed=11,
    )
    choice = out["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


def _check(schema: dict[str, Any], text: str) -> None:
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(json.loads(text))


@pytest.mark.parametrize(
    ("schema", "request_text", "max_tokens"),
    [
        (CONTACT, "Write a JSON contact card for a senior engineer who knows many languages.", 60),
        (ORDER, "Write a JSON order for two books.", 100),
        (ORDER, "Write a JSON order for five different books.", 160),
    ],
    ids=["contact-60", "order-100", "order-160"],
)
def test_outputs_finish_within_a_small_budget(
    llm: Any, schema: dict[str, Any], request_text: str, max_tokens: int
) -> None:
    grammar = json_schema_grammar(schema, budget_tokens=max_tokens)
    text, finish = _ask(llm, request_text, grammar, max_tokens)
    assert finish == "stop", text
    _check(schema, text)


def test_recursive_schema_finishes_within_budget(llm: Any) -> None:
    grammar = json_schema_grammar(MENU, budget_tokens=90)
    text, finish = _ask(llm, "Write the navigation menu of a bakery website as JSON.", grammar, 90)
    assert finish == "stop", text
    _check(MENU, text)


def test_json_object_mode_finishes_within_budget(llm: Any) -> None:
    grammar = response_format_grammar({"type": "json_object"}, budget_tokens=60)
    assert grammar is not None
    text, finish = _ask(llm, "Describe a cat as a JSON object with many fields.", grammar, 60)
    assert finish == "stop", text
    assert isinstance(json.loads(text), dict)
