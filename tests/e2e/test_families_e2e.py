"""End to end, per open model family: a tiny random-weight GGUF of the family's llama.cpp architecture, carrying
the family's real chat template and special tokens, imported with ``kaiyuan import`` and served by a real
``kaiyuan serve`` process, driven through the official ``openai`` SDK.

The weights are noise, so what the model *says* is random: the point is that kaiyuan's grammars and parsers make
the answer valid anyway. Checked per family:

1. ``tool_choice: "required"`` and a named function, non-stream and stream: ``finish_reason == "tool_calls"``,
   one call of an offered (the named) function, arguments that parse as JSON and validate against the function's
   schema; the stream carries OpenAI's delta shape (index, the id and name once, argument fragments).
2. ``response_format`` ``json_schema`` (strict; nested object, enum, array, required and optional fields): the
   content validates and the answer is complete within ``max_tokens`` (``finish_reason == "stop"``).
3. Families that think, with the think block opened in the prompt: in the stream everything before the end
   marker is ``reasoning_content`` and none of it ``content``; ``max_reasoning_tokens`` / ``reasoning_effort``
   bound ``usage.completion_tokens_details.reasoning_tokens`` and the answer goes on after the thinking.
4. ``json_schema`` with thinking: the thinking is free text, the grammar applies to the answer after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.conftest import Server, import_model, serve_models
from tests.fixtures import tiny_gguf

pytestmark = pytest.mark.slow

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory

ERNIE_TEMPLATE = Path(__file__).parents[1] / "chat" / "templates" / "baidu-ERNIE-4.5-0.3B-PT.jinja"

THINK = ("<think>", "</think>")
HERMES = ("<tool_call>", "</tool_call>")
DEEPSEEK = (
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
    *THINK,
)
_HY = ":opensource"
HUNYUAN = (
    f"<｜hy_begin_of_sentence{_HY}｜>",
    f"<｜hy_User{_HY}｜>",
    f"<｜hy_Assistant{_HY}｜>",
    f"<｜hy_eos{_HY}｜>",
    f"<｜reasoning_mode{_HY}｜>",
    f"<think{_HY}>",
    f"</think{_HY}>",
    f"<tool_calls{_HY}>",
    f"</tool_calls{_HY}>",
    f"<tool_call{_HY}>",
    f"</tool_call{_HY}>",
    f"<tool_sep{_HY}>",
    f"<arg_key{_HY}>",
    f"</arg_key{_HY}>",
    f"<arg_value{_HY}>",
    f"</arg_value{_HY}>",
)
GLM = (
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    *THINK,
    *HERMES,
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
)
LLAMA3 = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>")


@dataclass(frozen=True)
class Family:
    """One architecture × chat template pairing, and how a request makes it think (if it does)."""

    arch: str
    template: str | Path  # a fixture name in tests/fixtures/templates, or a template file
    specials: tuple[str, ...]
    # extra request fields that make the prompt open the think block; None: the family does not think
    thinking: dict[str, Any] | None = None
    end_marker: str = "</think>"
    start_marker: str = "<think>"
    body: dict[str, Any] = field(default_factory=dict)  # sent with every request

    def template_text(self) -> str:
        if isinstance(self.template, Path):
            return self.template.read_text(encoding="utf-8")
        return tiny_gguf.template_text(self.template)


# Thinking families first: indirect parameters are grouped by their index, so the same index in ``ALL`` and
# ``THINKERS`` lets one server per family serve both kinds of tests.
FAMILIES: dict[str, Family] = {
    # Qwen3's prompt does not open <think>; kaiyuan opens it when a budget or a grammar needs the split
    "qwen3": Family("qwen3", "Qwen-Qwen3-0.6B", (*THINK, *HERMES), thinking={}),
    "glm-4.6": Family("glm4", "GLM-4.6", GLM, thinking={}),
    # Hy3 opens <think:opensource> in the prompt for reasoning_effort low/high (default: no_think)
    "hunyuan-hy3": Family(
        "hunyuan-dense",
        "tencent-Hy3",
        HUNYUAN,
        thinking={"reasoning_effort": "low"},
        start_marker=f"<think{_HY}>",
        end_marker=f"</think{_HY}>",
    ),
    # the R1 distill's prompt ends with "<think>\n" (this llama.cpp copy closes it unless enable_thinking)
    "r1-distill-qwen": Family(
        "qwen2",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        DEEPSEEK,
        thinking={"extra_body": {"chat_template_kwargs": {"enable_thinking": True}}},
    ),
    "deepseek-v3.1": Family(
        "deepseek2",
        "deepseek-ai-DeepSeek-V3.1",
        DEEPSEEK,
        thinking={"extra_body": {"chat_template_kwargs": {"thinking": True}}},
    ),
    "qwen2.5": Family("qwen2", "Qwen-Qwen2.5-7B-Instruct", HERMES),
    "ernie-4.5": Family(
        "ernie4_5", ERNIE_TEMPLATE, ("<|begin_of_sentence|>", "<|end_of_sentence|>", *HERMES)
    ),
    "llama-3.2": Family("llama", "meta-llama-Llama-3.2-3B-Instruct", LLAMA3),
}
THINKING = [name for name, family in FAMILIES.items() if family.thinking is not None]

QUESTION = [{"role": "user", "content": "What will the weather be in Paris tomorrow?"}]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "hourly": {"type": "boolean"},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CONVERT = {
    "type": "function",
    "function": {
        "name": "convert_currency",
        "description": "Convert an amount of money",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "minimum": 0, "maximum": 1000000},
                "source": {"type": "string", "enum": ["EUR", "USD", "CNY"]},
                "target": {"type": "string", "enum": ["EUR", "USD", "CNY"]},
            },
            "required": ["amount", "source", "target"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CONVERT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

REPORT = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "forecast": {
            "type": "object",
            "properties": {
                "sky": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]},
                "high_c": {"type": "integer", "minimum": -60, "maximum": 60},
                "wind_kmh": {"type": "number", "minimum": 0},
            },
            "required": ["sky", "high_c"],
            "additionalProperties": False,
        },
        "alerts": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["city", "forecast", "alerts"],
    "additionalProperties": False,
}
REPORT_FORMAT = {"type": "json_schema", "json_schema": {"name": "report", "schema": REPORT, "strict": True}}


@dataclass
class Served:
    name: str
    family: Family
    server: Server
    model: str

    def create(self, *, think: bool = False, **kw: Any) -> Any:
        """``chat.completions.create`` on this family's model (``think``: with the request fields that open the
        family's think block)."""
        args: dict[str, Any] = {"model": self.model, "messages": QUESTION, "seed": 11, **self.family.body}
        if think:
            assert self.family.thinking is not None
            args = _merge(args, self.family.thinking)
        args = _merge(args, kw)
        return self.server.client(timeout=120).chat.completions.create(**args)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tiny_gguf_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One ``kaiyuan serve`` per family (the module-scoped parameter), reused by all of that family's checks."""
    name: str = request.param
    family = FAMILIES[name]
    path = tiny_gguf_factory(
        arch=family.arch,
        chat_template=family.template_text(),
        extra_special_tokens=list(family.specials),
        license={"id": "apache-2.0", "name": "Apache License 2.0"},
    )
    home = tmp_path_factory.mktemp(f"e2e-{name}")
    model = f"tiny-{name.replace('.', '')}:test"
    import_model(home, path, model)
    for server in serve_models(home, model):
        yield Served(name, family, server, model)
    log = (home / "serve.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log[-4000:]  # nothing went wrong on the server's side either


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _extra(obj: Any, key: str) -> Any:
    return (obj.model_extra or {}).get(key)


@dataclass
class Streamed:
    """A chat stream put back together the way an OpenAI client does, checking the delta shape on the way."""

    content: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    order: list[str] = field(default_factory=list)  # "r" / "c" / "t" per delta, to check what came first


def collect(stream: Any) -> Streamed:
    out = Streamed()
    for chunk in stream:
        if chunk.usage is not None:
            out.usage = chunk.usage
        for choice in chunk.choices:
            assert choice.index == 0
            delta = choice.delta
            if reasoning := _extra(delta, "reasoning_content"):
                out.reasoning += reasoning
                out.order.append("r")
            if delta.content:
                out.content += delta.content
                out.order.append("c")
            for call in delta.tool_calls or []:
                out.order.append("t")
                if call.index not in out.calls:
                    # the first delta of a call carries its id, type and name; arguments may start here
                    assert call.id and call.type == "function" and call.function and call.function.name, call
                    out.calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
                else:
                    # later deltas carry argument fragments only: no second id or name
                    assert not call.id and not (call.function and call.function.name), call
                if call.function and call.function.arguments:
                    out.calls[call.index]["arguments"] += call.function.arguments
            if choice.finish_reason is not None:
                assert out.finish_reason is None, "two finish reasons"
                out.finish_reason = choice.finish_reason
    return out


def check_call(name: str, arguments: str, offered: set[str]) -> None:
    assert name in offered, f"called {name!r}, offered {sorted(offered)}"
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def reasoning_tokens(usage: Any) -> int:
    return int(usage.completion_tokens_details.reasoning_tokens or 0)


ALL = pytest.mark.parametrize("served", list(FAMILIES), indirect=True)
THINKERS = pytest.mark.parametrize("served", THINKING, indirect=True)

TOOL_MAX_TOKENS = 256
PARALLEL_MAX_TOKENS = 768


# ---------------------------------------------------------------------------------------------------------------
# 1. tool_choice required / named
# ---------------------------------------------------------------------------------------------------------------


@ALL
def test_required_tool_call_is_valid(served: Served) -> None:
    resp = served.create(
        tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=TOOL_MAX_TOKENS
    )
    (choice,) = resp.choices
    assert choice.finish_reason == "tool_calls", (choice, resp.usage)
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    check_call(call.function.name, call.function.arguments, set(SCHEMAS))
    assert not choice.message.content  # a forced call leaves no room for text


@ALL
def test_named_tool_call_is_valid(served: Served) -> None:
    resp = served.create(
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "convert_currency"}},
        parallel_tool_calls=False,
        max_tokens=TOOL_MAX_TOKENS,
        seed=12,
    )
    (choice,) = resp.choices
    assert choice.finish_reason == "tool_calls", (choice, resp.usage)
    (call,) = choice.message.tool_calls
    check_call(call.function.name, call.function.arguments, {"convert_currency"})
    assert not choice.message.content


# Parallel calls allowed (the default). The grammar fits the whole answer into what max_tokens leaves after any
# thinking (chat/tool_grammars.py): at 256 tokens that is room for one call, at 768 for several, and a random model
# adds calls until it picks the end or the grammar allows no more. Either way every call is complete and valid.
@ALL
@pytest.mark.parametrize("max_tokens", [TOOL_MAX_TOKENS, PARALLEL_MAX_TOKENS])
def test_parallel_tool_calls_are_valid_and_complete(served: Served, max_tokens: int) -> None:
    resp = served.create(tools=TOOLS, tool_choice="required", max_tokens=max_tokens, seed=15)
    (choice,) = resp.choices
    assert choice.finish_reason == "tool_calls", (choice, resp.usage)
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        check_call(call.function.name, call.function.arguments, set(SCHEMAS))
    assert not choice.message.content
    assert resp.usage.completion_tokens < max_tokens


@ALL
def test_max_tokens_too_small_for_a_tool_call_is_refused(served: Served) -> None:
    # a forced call that cannot be complete within max_tokens is a clear 400, not an answer cut off mid-call
    with pytest.raises(openai.BadRequestError) as bad:
        served.create(
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "convert_currency"}},
            max_tokens=12,
        )
    assert bad.value.param == "max_tokens"
    assert "does not fit in" in bad.value.message and "raise max_tokens" in bad.value.message


@ALL
def test_required_tool_call_streams_in_openai_shape(served: Served) -> None:
    stream = served.create(
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=TOOL_MAX_TOKENS,
        seed=13,
        stream=True,
        stream_options={"include_usage": True},
    )
    out = collect(stream)
    assert out.finish_reason == "tool_calls", out
    assert list(out.calls) == [0]
    check_call(out.calls[0]["name"], out.calls[0]["arguments"], set(SCHEMAS))
    assert not out.content
    assert out.usage.completion_tokens <= TOOL_MAX_TOKENS


@ALL
def test_named_tool_call_streams_in_openai_shape(served: Served) -> None:
    stream = served.create(
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=TOOL_MAX_TOKENS,
        seed=14,
        stream=True,
    )
    out = collect(stream)
    assert out.finish_reason == "tool_calls", out
    assert list(out.calls) == [0]
    check_call(out.calls[0]["name"], out.calls[0]["arguments"], {"get_weather"})
    assert out.calls[0]["id"].startswith("call_")


# ---------------------------------------------------------------------------------------------------------------
# 2. response_format json_schema
# ---------------------------------------------------------------------------------------------------------------


@ALL
def test_json_schema_answer_validates_and_completes(served: Served) -> None:
    resp = served.create(response_format=REPORT_FORMAT, max_tokens=200)
    (choice,) = resp.choices
    jsonschema.validate(json.loads(choice.message.content), REPORT)
    # the grammar fits the answer into max_tokens: it ends because it is complete, not because it was cut off
    assert choice.finish_reason == "stop", (choice.finish_reason, resp.usage, choice.message.content)
    assert resp.usage.completion_tokens < 200


@ALL
def test_json_schema_answer_streams(served: Served) -> None:
    out = collect(served.create(response_format=REPORT_FORMAT, max_tokens=200, seed=21, stream=True))
    jsonschema.validate(json.loads(out.content), REPORT)
    assert out.finish_reason == "stop"
    assert not out.calls


# ---------------------------------------------------------------------------------------------------------------
# 3. thinking: the split and the budget
# ---------------------------------------------------------------------------------------------------------------


def _check_split(family: Family, out: Streamed) -> None:
    for marker in (family.start_marker, family.end_marker):
        assert marker not in out.content and marker not in out.reasoning, (marker, out)
    # everything before the end marker is reasoning: the stream never goes back to it once the answer started
    assert out.order and out.order[0] == "r", out.order
    first_answer = out.order.index("c") if "c" in out.order else len(out.order)
    assert "r" not in out.order[first_answer:], out.order


@THINKERS
def test_stream_splits_thinking_and_keeps_the_budget(served: Served) -> None:
    budget, max_tokens = 8, 40
    out = collect(
        served.create(
            think=True,
            max_tokens=max_tokens,
            extra_body={"max_reasoning_tokens": budget},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    _check_split(served.family, out)
    assert out.reasoning.strip()
    # the budget is the thinking tokens; the engine then writes the end marker (one token here) itself
    assert 1 <= reasoning_tokens(out.usage) <= budget + 1, out.usage
    assert out.content.strip(), "after the budget the model goes on to answer"
    assert out.usage.completion_tokens <= max_tokens
    assert out.finish_reason == ("length" if out.usage.completion_tokens == max_tokens else "stop")


@THINKERS
def test_reasoning_effort_sets_the_budget(served: Served) -> None:
    # "medium" is 2048 tokens, capped so that the answer keeps a quarter of max_tokens. Hunyuan's template knows
    # only no_think/low/high: kaiyuan passes it "high" for "medium" (the template refuses anything else)
    max_tokens = 48
    resp = served.create(think=True, reasoning_effort="medium", max_tokens=max_tokens, seed=5)
    (choice,) = resp.choices
    message = choice.message
    reasoning = _extra(message, "reasoning_content")
    assert reasoning and message.content, message
    for marker in (served.family.start_marker, served.family.end_marker):
        assert marker not in message.content and marker not in reasoning
    assert 1 <= reasoning_tokens(resp.usage) <= max_tokens * 3 // 4 + 1, resp.usage
    assert resp.usage.completion_tokens <= max_tokens


@THINKERS
def test_reasoning_effort_none_answers_without_thinking(served: Served) -> None:
    resp = served.create(think=True, reasoning_effort="none", max_tokens=16, seed=6)
    (choice,) = resp.choices
    assert not _extra(choice.message, "reasoning_content"), choice.message
    assert choice.message.content
    assert reasoning_tokens(resp.usage) <= 1, resp.usage  # at most the end marker, written by the engine


# ---------------------------------------------------------------------------------------------------------------
# 4. json_schema after thinking
# ---------------------------------------------------------------------------------------------------------------


@THINKERS
def test_json_schema_applies_after_free_thinking(served: Served) -> None:
    budget, max_tokens = 24, 240
    out = collect(
        served.create(
            think=True,
            response_format=REPORT_FORMAT,
            max_tokens=max_tokens,
            seed=31,
            extra_body={"max_reasoning_tokens": budget},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    _check_split(served.family, out)
    # free text: random thinking is not JSON (the grammar did not constrain it)
    with pytest.raises(ValueError):
        json.loads(out.reasoning)
    jsonschema.validate(json.loads(out.content), REPORT)
    assert out.finish_reason == "stop", out
    assert 1 <= reasoning_tokens(out.usage) <= budget + 1, out.usage


@THINKERS
def test_required_tool_call_after_thinking(served: Served) -> None:
    resp = served.create(
        think=True,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=TOOL_MAX_TOKENS,
        seed=41,
        extra_body={"max_reasoning_tokens": 16},
    )
    (choice,) = resp.choices
    assert choice.finish_reason == "tool_calls", (choice, resp.usage)
    assert _extra(choice.message, "reasoning_content")
    (call,) = choice.message.tool_calls
    check_call(call.function.name, call.function.arguments, set(SCHEMAS))
    assert 1 <= reasoning_tokens(resp.usage) <= 16 + 1


def test_every_family_is_covered() -> None:
    """The pairings the issue names: each architecture tiny_gguf can write is served here at least once."""
    assert {f.arch for f in FAMILIES.values()} == set(tiny_gguf.ARCHITECTURES)
    assert {"qwen3", "glm-4.6", "hunyuan-hy3", "r1-distill-qwen", "deepseek-v3.1"} <= set(THINKING)
