"""ERNIE 4.5: Baidu's published chat template through the sandbox, and the Thinking model's output format.

The template is the one Baidu ships with ERNIE-4.5-0.3B-PT (see templates/SOURCES-ernie.md); it has no tool or
thinking markup, so tools and tool results do not reach the prompt. The Thinking model's output format (reasoning,
``</think>``, then ``<response>…</response>`` or ``<tool_call>`` blocks) is the one Baidu's FastDeploy parsers read;
its full template text was not available here, so the parsing tests use the ``ernie45`` dialect with the
``<think>`` markers that ``detect_dialect`` gives an ERNIE template containing them.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from kaiyuan.chat import ChatTemplate, detect_dialect, dialect_by_name
from kaiyuan.types import Message, ToolCall
from tests.chat._helpers import TOOLS, parse_every_split, template_text

ERNIE_THINKING = dataclasses.replace(
    dialect_by_name("ernie45"), reasoning_start="<think>", reasoning_end="</think>"
)


def test_baidus_template_renders_in_the_sandbox() -> None:
    template = ChatTemplate(template_text("baidu-ERNIE-4.5-0.3B-PT.jinja"))
    messages = [
        Message("system", "You are a weather bot."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "Sunny, 21 °C."),
        Message("user", "And Rome?"),
    ]
    assert template.render(messages) == (
        "<|begin_of_sentence|>You are a weather bot.\nUser: Weather in Paris?\nAssistant: Sunny, 21 °C."
        "<|end_of_sentence|>User: And Rome?\nAssistant: "
    )
    # The template cannot show tools: they are described in the system message instead (docs/reasoning-and-tools.md)
    prompt = template.render(messages, tools=TOOLS)
    head, _, tail = prompt.partition("\nUser: Weather in Paris?")
    assert head.startswith("<|begin_of_sentence|>You are a weather bot.") and '"name": "get_weather"' in head
    assert tail == "\nAssistant: Sunny, 21 °C.<|end_of_sentence|>User: And Rome?\nAssistant: "
    assert template.dialect.name == "ernie45" and not template.dialect.has_reasoning


def test_tool_turns_do_not_break_the_template() -> None:
    template = ChatTemplate(template_text("baidu-ERNIE-4.5-0.3B-PT.jinja"))
    messages = [
        Message("user", "Weather in Paris?"),
        Message("assistant", None, tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="c1")]),
        Message("tool", '{"temp_c": 21}', tool_call_id="c1"),
    ]
    prompt = template.render(messages, tools=TOOLS)
    assert prompt.endswith("Assistant: ") and "None" not in prompt


def test_thinking_template_markers_select_ernie_with_reasoning() -> None:
    # the markers Baidu's Thinking template renders (system <global_setting>, generation prompt "<think>\n")
    source = "{{- '<|im_start|>system\\n<global_setting>\\nthink_mode=True\\n</global_setting><|im_end|>' -}}<think>"
    dialect = detect_dialect(source)
    assert dialect.name == "ernie45" and dialect.reasoning_start == "<think>"
    assert dialect.think_opened_in_prompt("<|im_start|>assistant\n<think>\n")


@pytest.mark.parametrize(
    ("output", "reasoning", "content", "calls"),
    [
        (
            "The user greets me.\n</think>\n\n<response>\nHello! How can I help?\n</response>\n",
            "The user greets me.",
            "Hello! How can I help?",
            [],
        ),
        (
            "Need the weather tool.\n</think>\n\n\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Beijing"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Shanghai", "days": 2}}\n</tool_call>\n',
            "Need the weather tool.",
            "",
            [("get_weather", {"city": "Beijing"}), ("get_weather", {"city": "Shanghai", "days": 2})],
        ),
        ("Short.\n</think>\nPlain answer without wrapper.", "Short.", "Plain answer without wrapper.", []),
    ],
)
def test_thinking_model_output_parses_at_every_split(
    output: str, reasoning: str, content: str, calls: list[tuple[str, dict[str, object]]]
) -> None:
    parsed = parse_every_split(ERNIE_THINKING, output, tools=TOOLS, starts_in_reasoning=True)
    assert parsed.reasoning == reasoning
    assert parsed.content == content
    assert [(name, json.loads(args)) for _i, name, args in parsed.calls] == calls
