"""Every supported family, end to end on the prompt side.

For each one: the real chat template (llama.cpp's copies of the publishers' files; ERNIE has its own test file,
test_ernie.py) renders a conversation with tools, an assistant turn carrying
reasoning and tool calls, and the tool results; the dialect is detected from the template; whether the prompt
leaves the think block open is read from the rendered prompt; then a realistic model output in that family's
format is parsed whole and split at every character boundary, and must give the same reasoning, content and
tool calls every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kaiyuan.chat import ChatTemplate, detect_dialect
from kaiyuan.types import Message, ToolCall
from tests.chat._helpers import TOOLS, parse_every_split, template_text

REASONING_IN_HISTORY = "The user wants two cities."


def agent_loop(parallel: bool = True) -> list[Message]:
    """A conversation paused inside a tool loop: the last turn is the tool results."""
    calls = [ToolCall(name="get_weather", arguments='{"city": "Paris", "days": 2}', id="call_paris1")]
    results = [Message(role="tool", content='{"temp_c": 21}', tool_call_id="call_paris1")]
    if parallel:
        calls.append(ToolCall(name="get_weather", arguments='{"city": "Rome"}', id="call_rome22"))
        results.append(Message(role="tool", content='{"temp_c": 25}', tool_call_id="call_rome22"))
    return [
        Message(role="system", content="You are a weather bot."),
        Message(role="user", content="Weather in Paris and Rome?"),
        Message(role="assistant", content=None, reasoning_content=REASONING_IN_HISTORY, tool_calls=calls),
        *results,
    ]


def follow_up(parallel: bool = True) -> list[Message]:
    """The tool loop finished, answered, and the user asks again: the prompt ends with a generation prompt."""
    return [
        *agent_loop(parallel),
        Message(role="assistant", content="Paris: 21 °C, Rome: 25 °C.", reasoning_content="Summarise both."),
        Message(role="user", content="And Berlin?"),
    ]


@dataclass
class Family:
    id: str
    template: str
    dialect: str
    output: str
    reasoning: str
    content: str
    calls: list[tuple[str, dict[str, Any]]]
    opened: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    keeps_reasoning: bool = False  # the agent-loop prompt carries the assistant's reasoning_content
    parallel_history: bool = True
    renders_tools: bool = True  # the template itself writes the tool definitions into the prompt
    renders_calls: bool = True  # the assistant's tool calls and the tool results appear in the prompt


BERLIN = ("get_weather", {"city": "Berlin", "days": 3})
BERLIN1 = ("get_weather", {"city": "Berlin"})
OSLO = ("get_weather", {"city": "Oslo", "days": 2})

R1_CALL = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    '{"city": "Berlin", "days": 3}\n```<｜tool▁call▁end｜>\n'
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    '{"city": "Oslo", "days": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
)
HERMES_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Berlin", "days": 3}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}\n</tool_call>'
)
KIMI_CALLS = (
    "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
    '{"city": "Berlin", "days": 3}<|tool_call_end|><|tool_call_begin|>functions.get_weather:1'
    '<|tool_call_argument_begin|>{"city": "Oslo", "days": 2}<|tool_call_end|><|tool_calls_section_end|>'
)

FAMILIES = [
    Family(
        "deepseek-r1-distill-qwen",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "deepseek-r1",
        "Berlin has not been looked up yet, so I need the tool.\n</think>\n\nLet me check Berlin.\n\n"
        + R1_CALL,
        "Berlin has not been looked up yet, so I need the tool.",
        "Let me check Berlin.",
        [BERLIN, OSLO],
        opened=True,
        kwargs={"enable_thinking": True},
        renders_tools=False,
    ),
    Family(
        "deepseek-r1-distill-llama",
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "deepseek-r1",
        "Okay, the user asks about Berlin.\n\nI will call get_weather.\n</think>\n\n" + R1_CALL,
        "Okay, the user asks about Berlin.\n\nI will call get_weather.",
        "",
        [BERLIN, OSLO],
        opened=True,
        renders_tools=False,
    ),
    Family(
        "deepseek-r1-llama.cpp",
        "llama-cpp-deepseek-r1.jinja",
        "deepseek-r1",
        "Need the tool.</think>" + R1_CALL,
        "Need the tool.",
        "",
        [BERLIN, OSLO],
        opened=True,
    ),
    Family(
        "deepseek-v3.1",
        "deepseek-ai-DeepSeek-V3.1.jinja",
        "deepseek-v3.1",
        "I should call the tool for both cities.</think>Checking."
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
        '{"city": "Berlin", "days": 3}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
        '{"city": "Oslo", "days": 2}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "I should call the tool for both cities.",
        "Checking.",
        [BERLIN, OSLO],
        opened=True,
        kwargs={"thinking": True},
        renders_tools=False,
    ),
    Family(
        "deepseek-v3.2",
        "deepseek-ai-DeepSeek-V3.2.jinja",
        "deepseek-v3.2",
        "Need weather for Berlin.</think>\n\n<｜DSML｜function_calls>\n"
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Berlin</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
        '</｜DSML｜invoke>\n<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Oslo</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">2</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
        "Need weather for Berlin.",
        "",
        [BERLIN, OSLO],
        opened=True,
        kwargs={"thinking": True},
        keeps_reasoning=True,
    ),
    Family(
        "qwen2.5",
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "hermes",
        "I'll look up both.\n" + HERMES_CALLS,
        "",
        "I'll look up both.",
        [BERLIN, OSLO],
    ),
    Family(
        "hermes-2-pro",
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        "hermes",
        HERMES_CALLS,
        "",
        "",
        [BERLIN, OSLO],
    ),
    Family(
        "hermes-3",
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "hermes",
        HERMES_CALLS + "\n",
        "",
        "",
        [BERLIN, OSLO],
    ),
    Family(
        "qwen3",
        "Qwen-Qwen3-0.6B.jinja",
        "qwen3",
        "<think>\nThe user asks about Berlin; I will call the tool.\n</think>\n\n" + HERMES_CALLS,
        "The user asks about Berlin; I will call the tool.",
        "",
        [BERLIN, OSLO],
        keeps_reasoning=True,
    ),
    Family(
        "qwq",
        "Qwen-QwQ-32B.jinja",
        "qwen3",
        "Berlin needs a lookup.\n</think>\n\n" + HERMES_CALLS,
        "Berlin needs a lookup.",
        "",
        [BERLIN, OSLO],
        opened=True,
        kwargs={"enable_thinking": True},
    ),
    Family(
        "qwen3-coder",
        "Qwen3-Coder.jinja",
        "qwen3-coder",
        "I'll look that up.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nBerlin\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nOslo\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>",
        "",
        "I'll look that up.",
        [BERLIN, OSLO],
    ),
    Family(
        "qwen3.5",
        "Qwen3.5-4B.jinja",
        "qwen3-coder",
        "Berlin lookup needed.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nBerlin\n"
        "</parameter>\n</function>\n</tool_call>",
        "Berlin lookup needed.",
        "",
        [BERLIN1],
        opened=True,
        keeps_reasoning=True,
    ),
    Family(
        "glm-4.6",
        "GLM-4.6.jinja",
        "glm45",
        "\n<think>Need Berlin weather.</think>\nI'll check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
        "<arg_value>Berlin</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n"
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n<arg_key>days</arg_key>\n"
        "<arg_value>2</arg_value>\n</tool_call>",
        "Need Berlin weather.",
        "I'll check.",
        [BERLIN, OSLO],
        keeps_reasoning=True,
    ),
    Family(
        "glm-4.7",
        "GLM-4.7-Flash.jinja",
        "glm45",
        "Need Berlin weather.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Berlin</arg_value>"
        "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call><tool_call>get_weather<arg_key>city</arg_key>"
        "<arg_value>Oslo</arg_value><arg_key>days</arg_key><arg_value>2</arg_value></tool_call>",
        "Need Berlin weather.",
        "",
        [BERLIN, OSLO],
        opened=True,
        keeps_reasoning=True,
    ),
    Family(
        "hunyuan-hy3",
        "tencent-Hy3.jinja",
        "hunyuan",
        "Berlin needs the tool.</think:opensource><tool_calls:opensource>\n<tool_call:opensource>get_weather"
        "<tool_sep:opensource>\n<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>Berlin"
        "</arg_value:opensource>\n<arg_key:opensource>days</arg_key:opensource>\n<arg_value:opensource>3"
        "</arg_value:opensource>\n</tool_call:opensource>\n<tool_call:opensource>get_weather<tool_sep:opensource>\n"
        "<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>Oslo</arg_value:opensource>\n"
        "<arg_key:opensource>days</arg_key:opensource>\n<arg_value:opensource>2</arg_value:opensource>\n"
        "</tool_call:opensource>\n</tool_calls:opensource>",
        "Berlin needs the tool.",
        "",
        [BERLIN, OSLO],
        opened=True,
        kwargs={"reasoning_effort": "high"},
        keeps_reasoning=True,
    ),
    Family(
        "kimi-k2",
        "moonshotai-Kimi-K2.jinja",
        "kimi-k2",
        "Let me check." + KIMI_CALLS,
        "",
        "Let me check.",
        [BERLIN, OSLO],
    ),
    Family(
        "kimi-k2-instruct",
        "Kimi-K2-Instruct.jinja",
        "kimi-k2",
        KIMI_CALLS,
        "",
        "",
        [BERLIN, OSLO],
    ),
    Family(
        "kimi-k2-thinking",
        "Kimi-K2-Thinking.jinja",
        "kimi-k2",
        "<think>Berlin and Oslo both need lookups.</think>Let me check." + KIMI_CALLS,
        "Berlin and Oslo both need lookups.",
        "Let me check.",
        [BERLIN, OSLO],
        keeps_reasoning=True,
    ),
    Family(
        "llama-3.1",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Berlin", "days": 3}}',
        "",
        "",
        [BERLIN],
        parallel_history=False,
    ),
    Family(
        "llama-3.2",
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Berlin", "days": 3}}; '
        '{"name": "get_weather", "parameters": {"city": "Oslo", "days": 2}}',
        "",
        "",
        [BERLIN, OSLO],
        parallel_history=False,
    ),
    Family(
        "llama-3.3",
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "llama3",
        '\n{"name": "get_weather", "parameters": {"days": 3, "city": "Berlin"}}',
        "",
        "",
        [("get_weather", {"days": 3, "city": "Berlin"})],
        parallel_history=False,
    ),
    Family(
        "mistral-nemo",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Berlin", "days": 3}, "id": "a1b2c3d4e"}, '
        '{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}, "id": "f5g6h7i8j"}]',
        "",
        "",
        [BERLIN, OSLO],
    ),
    Family(
        "mistral-small-3.2",
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Berlin", "days": 3}'
        '[TOOL_CALLS]get_weather[CALL_ID]f5g6h7i8j[ARGS]{"city": "Oslo", "days": 2}',
        "",
        "",
        [BERLIN, OSLO],
    ),
]


def _family_id(f: Family) -> str:
    return f.id


@pytest.mark.parametrize("family", FAMILIES, ids=_family_id)
def test_dialect_is_detected_from_the_real_template(family: Family) -> None:
    assert detect_dialect(template_text(family.template)).name == family.dialect


@pytest.mark.parametrize("family", FAMILIES, ids=_family_id)
def test_tools_calls_results_and_reasoning_round_trip_through_the_template(family: Family) -> None:
    template = ChatTemplate(template_text(family.template), bos_token="<s>", eos_token="</s>")
    prompt = template.render(agent_loop(family.parallel_history), tools=TOOLS, **family.kwargs)

    # templates that cannot show tools get them described in a system message (chat/tool_prompt.py)
    assert "Current weather for a city" in prompt
    assert template.shows_tools == family.renders_tools
    assert ("You can call these tools:" in prompt) != family.renders_tools
    if family.renders_calls:
        assert "get_weather" in prompt and "Paris" in prompt
        assert _has_result(prompt, 21)
        if family.parallel_history:
            assert "Rome" in prompt and _has_result(prompt, 25)
    assert (REASONING_IN_HISTORY in prompt) == family.keeps_reasoning
    assert "None" not in prompt  # content: null never leaks into the prompt as text


@pytest.mark.parametrize("family", FAMILIES, ids=_family_id)
def test_generation_prompt_opens_the_think_block_when_the_template_does(family: Family) -> None:
    template = ChatTemplate(template_text(family.template), bos_token="<s>", eos_token="</s>")
    prompt = template.render(follow_up(family.parallel_history), tools=TOOLS, **family.kwargs)
    assert "And Berlin?" in prompt
    dialect = template.dialect
    assert dialect.think_opened_in_prompt(prompt) == family.opened


@pytest.mark.parametrize("family", FAMILIES, ids=_family_id)
def test_model_output_parses_the_same_however_it_is_streamed(family: Family) -> None:
    template = ChatTemplate(template_text(family.template), bos_token="<s>", eos_token="</s>")
    prompt = template.render(follow_up(family.parallel_history), tools=TOOLS, **family.kwargs)
    dialect = template.dialect

    parsed = parse_every_split(
        dialect, family.output, tools=TOOLS, starts_in_reasoning=dialect.think_opened_in_prompt(prompt)
    )

    assert parsed.reasoning == family.reasoning
    assert parsed.content == family.content
    assert [(name, json.loads(args)) for _id, name, args in parsed.calls] == family.calls


def _has_result(prompt: str, temp: int) -> bool:
    """The tool result is in the prompt, as sent or JSON-quoted (Meta's Llama 3.x templates run it through
    ``tojson`` because a string is iterable)."""
    result = json.dumps({"temp_c": temp})
    return result in prompt or json.dumps(result) in prompt
