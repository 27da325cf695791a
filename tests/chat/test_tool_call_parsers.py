"""Tool-call parsers: edge cases of each format (the family tests cover the well-formed outputs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kaiyuan.chat import dialect_by_name
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
    from kaiyuan.chat import DIALECTS

    assert {d.tool_parser for d in DIALECTS.values()} <= set(PARSERS)
    with pytest.raises(KeyError, match="known"):
        get_tool_call_parser("nope")
