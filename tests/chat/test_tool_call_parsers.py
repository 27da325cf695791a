"""Tool-call parsers: edge cases of each format (the family tests cover the well-formed outputs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kaiyuan.chat import DIALECTS, dialect_by_name
from kaiyuan.chat.tool_call_parsers import PARSERS, coerce_param_value, get_tool_call_parser
from tests.chat._helpers import TOOLS, parse_chunks, parse_every_split


def calls(parsed: Any) -> list[tuple[str, Any]]:
    return [(name, json.loads(args)) for _id, name, args in parsed.calls]


@pytest.mark.parametrize(
    "dialect", ["hermes", "llama3", "mistral", "kimi-k2", "glm45", "generic", "qwen3-coder"]
)
def test_plain_answer_is_untouched(dialect: str) -> None:
    text = "The weather in Paris is sunny.\n\nEnjoy!  \n"
    parsed = parse_every_split(dialect_by_name(dialect), text, tools=TOOLS)
    assert parsed.content == text and parsed.calls == ()


def test_arguments_stream_in_fragments_not_all_at_once() -> None:
    parser = get_tool_call_parser("hermes")(TOOLS)
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}</tool_call>'
    fragments = [d.arguments for chunk in text for d in parser.feed(chunk).tool_calls if d.arguments]
    assert len(fragments) > 5
    assert "".join(fragments) == '{"city": "Paris", "days": 2}'


def test_hermes_malformed_block_is_given_back_as_content() -> None:
    text = "Sure. <tool_call>this is not json</tool_call> Bye."
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert parsed.calls == () and parsed.content == text


def test_hermes_arguments_before_name_and_arguments_as_a_string() -> None:
    text = (
        '<tool_call>{"arguments": {"city": "Rome"}, "name": "get_weather"}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>'
    )
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert calls(parsed) == [("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Oslo"})]


def test_truncated_call_keeps_what_was_streamed() -> None:
    text = 'Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert parsed.content == "Checking."
    assert [(n, a) for _i, n, a in parsed.calls] == [("get_weather", '{"city": "Par')]


def test_truncated_before_the_name_is_content() -> None:
    text = 'Checking.<tool_call>\n{"na'
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert parsed.calls == () and parsed.content == text


def test_text_after_a_call_stays_content() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>\n\nI will wait for the result.'
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert parsed.content == "I will wait for the result."
    assert calls(parsed) == [("get_weather", {})]


def test_call_without_arguments_gets_an_empty_object() -> None:
    parsed = parse_every_split(dialect_by_name("hermes"), '<tool_call>{"name": "get_weather"}</tool_call>')
    assert calls(parsed) == [("get_weather", {})]


def test_llama3_json_answer_that_is_not_a_call_stays_content() -> None:
    for text in ('{"answer": 42}', '{"name": "Alice", "parameters": {}}', 'Here: {"name": "get_weather"}'):
        parsed = parse_every_split(dialect_by_name("llama3"), text, tools=TOOLS)
        assert parsed.calls == () and parsed.content == text


def test_generic_json_shapes() -> None:
    generic = dialect_by_name("generic")
    single = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert calls(parse_every_split(generic, single, tools=TOOLS)) == [("get_weather", {"city": "Paris"})]
    many = (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "Rome"}}]}'
    )
    assert calls(parse_every_split(generic, many, tools=TOOLS)) == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    hermes = 'Let me see. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    parsed = parse_every_split(generic, hermes, tools=TOOLS)
    assert parsed.content == "Let me see." and calls(parsed) == [("get_weather", {"city": "Oslo"})]
    for not_a_call in ('{"name": "Alice", "age": 3}', '{"result": [1, 2]}', "{}"):
        parsed = parse_every_split(generic, not_a_call, tools=TOOLS)
        assert parsed.calls == () and parsed.content == not_a_call


def test_mistral_call_id_from_the_model_is_kept() -> None:
    parsed = parse_chunks(
        dialect_by_name("mistral"), ['[TOOL_CALLS]get_weather[CALL_ID]Ab3dE6gH9[ARGS]{"city": "Oslo"}']
    )
    assert parsed.calls == (("Ab3dE6gH9", "get_weather", '{"city": "Oslo"}'),)


def test_kv_values_follow_the_schema() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "book",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "seats": {"type": "integer"},
                        "vip": {"type": "boolean"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "meta": {"type": "object"},
                    },
                },
            },
        }
    ]
    text = (
        "<tool_call>book<arg_key>code</arg_key><arg_value>007</arg_value><arg_key>seats</arg_key>"
        "<arg_value>2</arg_value><arg_key>vip</arg_key><arg_value>true</arg_value><arg_key>tags</arg_key>"
        '<arg_value>["a", "b"]</arg_value><arg_key>meta</arg_key><arg_value>{"k": 1}</arg_value>'
        "<arg_key>note</arg_key><arg_value>line one\nline two</arg_value></tool_call>"
    )
    parsed = parse_every_split(dialect_by_name("glm45"), text, tools=tools)
    assert calls(parsed) == [
        (
            "book",
            {
                "code": "007",
                "seats": 2,
                "vip": True,
                "tags": ["a", "b"],
                "meta": {"k": 1},
                "note": "line one\nline two",
            },
        )
    ]


@pytest.mark.parametrize(
    ("raw", "schema", "value"),
    [
        ("42", {"type": "string"}, "42"),
        ("42", {"type": "integer"}, 42),
        ("4.5", {"type": "number"}, 4.5),
        ("True", {"type": "boolean"}, True),
        ("null", {"type": ["string", "null"]}, None),
        ("hello", {"type": "integer"}, "hello"),
        ("[1, 2]", None, [1, 2]),
        ("plain", None, "plain"),
        ("red", {"enum": ["red", "blue"]}, "red"),
    ],
)
def test_coerce_param_value(raw: str, schema: dict[str, Any] | None, value: Any) -> None:
    assert coerce_param_value(raw, schema) == value


def test_every_dialect_names_a_registered_parser() -> None:
    assert {d.tool_parser for d in DIALECTS.values()} <= set(PARSERS)
    with pytest.raises(KeyError, match="known"):
        get_tool_call_parser("nope")


# Pieces of every family's markup: random soups of them probe the state machines for crashes and for results
# that depend on how the stream was cut.
_SOUP = [
    *(
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        "<response>",
        "</response>",
        "<",
        "</",
        ">",
        "\n",
        " ",
    ),
    *('{"name": "get_weather", "arguments": ', '{"city": "Paris"}', "{", "}", "[", "]", '"', ",", "; ", "\\"),
    *("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "get_weather", "function", "city", "hello", '"parameters": '),
    *(
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁end｜>",
    ),
    *("```json\n", "```", "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "functions.get_weather:0"),
    *("<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|tool_calls_section_end|>", "<|python_tag|>"),
    *("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<function=", "<parameter=", "</parameter>"),
    *("</function>", "<｜DSML｜function_calls>", '<｜DSML｜invoke name="', '">', '<｜DSML｜parameter name="'),
    *('" string="true">', "</｜DSML｜parameter>", "</｜DSML｜invoke>", "</｜DSML｜function_calls>"),
    *("<tool_calls:opensource>", "<tool_call:opensource>", "<tool_sep:opensource>", "<arg_key:opensource>"),
    *(
        "</arg_key:opensource>",
        "<arg_value:opensource>",
        "</arg_value:opensource>",
        "</tool_call:opensource>",
    ),
    *("</tool_calls:opensource>", "<think:opensource>", "</think:opensource>", '{"tool_calls": ['),
]


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_random_markup_soup_parses_the_same_however_it_is_cut(name: str) -> None:
    import random

    dialect = DIALECTS[name]
    rng = random.Random(name)
    for _ in range(40):
        text = "".join(rng.choice(_SOUP) for _ in range(rng.randint(1, 25)))
        for starts in (False, True):
            whole = parse_chunks(dialect, [text], tools=TOOLS, starts_in_reasoning=starts)
            k, j = sorted(rng.randint(0, len(text)) for _ in range(2))
            for chunks in (list(text), [text[:k], text[k:j], text[j:]]):
                assert parse_chunks(dialect, chunks, tools=TOOLS, starts_in_reasoning=starts) == whole, text
