"""ResponseParser: reasoning first, then the answer wrapper, then tool calls — only in the answer."""

from __future__ import annotations

import json

from kaiyuan.chat import ResponseParser, dialect_by_name
from tests.chat._helpers import TOOLS, parse_every_split


def test_tool_call_inside_the_reasoning_is_not_executed() -> None:
    text = (
        '<think>Maybe <tool_call>{"name": "get_weather", "arguments": {"city": "X"}}</tool_call>? No.</think>'
        "I know this one: it is sunny."
    )
    parsed = parse_every_split(dialect_by_name("qwen3"), text, tools=TOOLS)
    assert parsed.calls == ()
    assert (
        parsed.reasoning.startswith("Maybe <tool_call>") and parsed.content == "I know this one: it is sunny."
    )


def test_parse_tools_false_leaves_tool_markup_as_content() -> None:
    text = '<think>hm</think><tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    parsed = parse_every_split(dialect_by_name("qwen3"), text, tools=TOOLS, parse_tools=False)
    assert parsed.calls == () and parsed.reasoning == "hm"
    assert parsed.content == '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'


def test_model_without_reasoning_markers_is_untouched() -> None:
    text = "<think>literally</think> text"
    parsed = parse_every_split(dialect_by_name("hermes"), text, tools=TOOLS)
    assert parsed.reasoning == "" and parsed.content == text


def test_properties_and_final_tool_calls() -> None:
    parser = ResponseParser(dialect_by_name("qwen3"), tools=TOOLS, starts_in_reasoning=True)
    assert parser.in_reasoning and not parser.reasoning_done
    first = parser.feed("Let me call it.</think>\n")
    assert first.reasoning == "Let me call it." and parser.reasoning_done
    parser.feed('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    last = parser.finish()
    assert last.is_empty
    [call] = parser.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert call.id.startswith("call_") and len(call.id) == 29


def test_mistral_calls_get_nine_character_ids() -> None:
    parser = ResponseParser(dialect_by_name("mistral"), tools=TOOLS)
    parser.feed('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    parser.finish()
    [call] = parser.tool_calls
    assert len(call.id) == 9 and call.id.isalnum()
