"""Tool-call grammars: llama.cpp accepts them, and whatever a model writes under them parses back (with the
dialect's own parser) into calls of the offered functions whose arguments validate against their schemas."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from kaiyuan.chat import ChatTemplate, ResponseParser, dialect_by_name
from kaiyuan.chat.dialects import Dialect
from kaiyuan.chat.tool_grammars import MAX_PARALLEL_CALLS, build_tool_call_grammar
from kaiyuan.errors import InvalidRequest, UnsupportedFeature
from tests.chat._gbnf_oracle import GrammarWalker
from tests.chat._helpers import WEATHER_TOOL, template_text

BOOK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Book a restaurant table",
        "parameters": {
            "type": "object",
            "properties": {
                "restaurant": {"type": "string", "maxLength": 40},
                "party": {"type": "integer", "minimum": 1, "maximum": 12},
                "time": {"type": "string", "enum": ["18:00", "19:30", "21:00"]},
                "vip": {"type": "boolean"},
                "dishes": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                "contact": {
                    "type": "object",
                    "properties": {"phone": {"type": "string", "pattern": "^[0-9]{6}$"}},
                    "required": ["phone"],
                    "additionalProperties": False,
                },
            },
            "required": ["restaurant", "party", "time"],
            "additionalProperties": False,
        },
    },
}
NO_ARGS_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}
TOOLS = [WEATHER_TOOL, BOOK_TOOL, NO_ARGS_TOOL]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in TOOLS}


def _dialects() -> list[Dialect]:
    names = ["hermes", "qwen3", "qwen3-coder", "deepseek-r1", "deepseek-v3.1", "deepseek-v3.2", "glm45"]
    names += ["hunyuan", "kimi-k2", "llama3", "mistral", "ernie45", "generic"]
    out = [dialect_by_name(n) for n in names]
    out.append(dataclasses.replace(dialect_by_name("mistral"), variant="v3"))
    out.append(dataclasses.replace(dialect_by_name("glm45"), variant="compact"))
    return out


DIALECTS = _dialects()


def _id(d: Dialect) -> str:
    return d.name + (f"-{d.variant}" if d.variant else "")


@pytest.fixture(scope="module")
def walker() -> Iterator[GrammarWalker]:
    w = GrammarWalker()
    yield w
    w.close()


def _parse(dialect: Dialect, text: str) -> tuple[str, list[tuple[str, Any]]]:
    parser = ResponseParser(dialect, tools=TOOLS)
    deltas = [parser.feed(text), parser.finish()]
    return "".join(d.content + d.reasoning for d in deltas), [
        (c.name, json.loads(c.arguments)) for c in parser.tool_calls
    ]


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_random_outputs_under_the_grammar_are_valid_calls(
    walker: GrammarWalker, dialect: Dialect, parallel: bool
) -> None:
    grammar = build_tool_call_grammar(dialect, TOOLS, "required", parallel)
    assert walker.parses(grammar), grammar
    rng = random.Random(f"{_id(dialect)}-{parallel}")
    names_seen: set[str] = set()
    for _ in range(8):
        text = walker.random_output(grammar, rng)
        leftover, calls = _parse(dialect, text)
        assert leftover == "", (text, leftover)
        assert 1 <= len(calls) <= (MAX_PARALLEL_CALLS if parallel else 1), text
        for name, args in calls:
            jsonschema.validate(args, SCHEMAS[name])
            names_seen.add(name)
    assert len(names_seen) >= 2  # the walk reaches different functions


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
def test_named_function_is_the_only_one_called(walker: GrammarWalker, dialect: Dialect) -> None:
    choice = {"type": "function", "function": {"name": "book_table"}}
    grammar = dialect.tool_call_grammar(TOOLS, choice, parallel=False)
    rng = random.Random(_id(dialect))
    for _ in range(6):
        text = walker.random_output(grammar, rng)
        leftover, calls = _parse(dialect, text)
        assert leftover == "" and [name for name, _ in calls] == ["book_table"], text
        jsonschema.validate(calls[0][1], SCHEMAS["book_table"])


@pytest.mark.parametrize(
    ("template", "variant"),
    [
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "v3"),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "v11"),
        ("GLM-4.6.jinja", ""),
        ("GLM-4.7-Flash.jinja", "compact"),
    ],
)
def test_the_format_variant_comes_from_the_template(template: str, variant: str) -> None:
    assert ChatTemplate(template_text(template)).dialect.variant == variant


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([], "required", "at least one tool"),
        (TOOLS, "auto", "only built for"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not in tools"),
        (TOOLS, {"type": "function"}, "must be 'required'"),
        ([{"type": "function", "function": {}}], "required", "with a name"),
    ],
)
def test_bad_tool_choice_is_an_invalid_request(tools: list[Any], choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build_tool_call_grammar(dialect_by_name("hermes"), tools, choice, False)


def test_what_a_tag_format_cannot_enforce_is_refused_by_name() -> None:
    pattern = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
            },
        },
    }
    any_of = {"type": "function", "function": {"name": "g", "parameters": {"anyOf": [{"type": "object"}]}}}
    for dialect in ("glm45", "qwen3-coder", "hunyuan", "deepseek-v3.2"):
        with pytest.raises(UnsupportedFeature, match="'pattern'"):
            build_tool_call_grammar(dialect_by_name(dialect), [pattern], "required", False)
        with pytest.raises(UnsupportedFeature, match="anyOf"):
            build_tool_call_grammar(dialect_by_name(dialect), [any_of], "required", False)
    # formats whose arguments are JSON enforce the same schemas through the JSON-schema compiler
    assert build_tool_call_grammar(dialect_by_name("hermes"), [pattern], "required", False)
