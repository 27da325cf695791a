"""End to end through the real server app and real llama.cpp on tiny random-weight GGUFs of the open families'
architectures, each carrying its family's real chat template: whatever the random weights say, a grammar makes
the answer a valid tool call / valid JSON, thinking lands in ``reasoning_content`` and the thinking budget holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kaiyuan.config import load_settings
from kaiyuan.server import Runtime, create_app
from kaiyuan.store import ModelStore
from tests.fixtures import tiny_gguf
from tests.server._support import post, run, sse_events

pytestmark = pytest.mark.slow

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory

THINK = ["<think>", "</think>"]
HERMES = ["<tool_call>", "</tool_call>", *THINK]
# DeepSeek's vocabulary has its tool-call markers as tokens (the grammar writes them as such; one token each)
DEEPSEEK = [
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    *THINK,
]

# name → (arch, template fixture, extra special tokens, chat_template_kwargs)
FAMILIES: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {
    "qwen3": ("qwen3", "Qwen-Qwen3-0.6B", HERMES, {}),
    "qwen25": ("qwen2", "Qwen-Qwen2.5-7B-Instruct", HERMES, {}),
    "r1-distill": ("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", DEEPSEEK, {"enable_thinking": True}),
    "glm47": (
        "glm4",
        "GLM-4.7-Flash",
        ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", *THINK],
        {},
    ),
    "deepseek-v31": ("deepseek2", "deepseek-ai-DeepSeek-V3.1", DEEPSEEK, {"thinking": True}),
}

# A tool whose arguments form a finite language: a grammar-bound random model must finish the call.
TOOL = {
    "type": "function",
    "function": {
        "name": "get_forecast",
        "description": "Weather forecast",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "hourly": {"type": "boolean"},
            },
            "required": ["unit", "days", "hourly"],
            "additionalProperties": False,
        },
    },
}

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "rain": {"type": "boolean"},
        "level": {"enum": ["low", "mid", "high"]},
    },
    "required": ["city", "rain", "level"],
    "additionalProperties": False,
}


@pytest.fixture
def family_app(tiny_gguf_factory, kaiyuan_home: Path):
    """``family_app(name)`` → (app, model name): the family's tiny GGUF imported into the store, served by the
    production runtime (llama.cpp, 1 thread, 2 slots)."""
    runtimes: list[Runtime] = []

    def make(name: str) -> tuple[Any, str]:
        arch, template, specials, _ = FAMILIES[name]
        path = tiny_gguf_factory(
            arch=arch, chat_template=tiny_gguf.template_text(template), extra_special_tokens=specials
        )
        settings = load_settings(threads=1, ctx=1024, parallel=2)
        ModelStore.from_settings(settings).import_gguf(path, f"tiny-{name}:test", link=True)
        runtime = Runtime.from_settings(settings)
        runtimes.append(runtime)
        return create_app(runtime), f"tiny-{name}:test"

    yield make
    for runtime in runtimes:
        runtime.close()


def ask(model: str, name: str, **kw: Any) -> dict[str, Any]:
    kwargs = FAMILIES[name][3]
    body = {"model": model, "messages": [{"role": "user", "content": "What is the weather in Paris?"}], **kw}
    if kwargs:
        body["chat_template_kwargs"] = kwargs
    return body


# The engine bounds the whitespace between "</think>" and the grammar's root (at most 4 characters); before it
# did, random models wrote whitespace until max_tokens (glm47 seed 2, r1-distill seed 1 caught it).
_TOOL_CASES = [pytest.param(name, seed) for name in sorted(FAMILIES) for seed in (1, 2)]


@pytest.mark.parametrize(("name", "seed"), _TOOL_CASES)
def test_required_tool_call_is_valid_whatever_the_weights(family_app, name: str, seed: int) -> None:
    app, model = family_app(name)
    # Parallel calls allowed (the default) and a modest max_tokens, half of it for thinking where the model thinks:
    # the tool-call grammar fits the whole answer, however many calls, into what is left.
    body = ask(model, name, tools=[TOOL], tool_choice="required", max_tokens=200, temperature=1.0, seed=seed)
    resp = run(post(app, "/v1/chat/completions", body))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["tool_calls"]
    for call in choice["message"]["tool_calls"]:
        assert call["function"]["name"] == "get_forecast"
        jsonschema.validate(json.loads(call["function"]["arguments"]), TOOL["function"]["parameters"])
    assert answer["usage"]["completion_tokens"] < 200


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_json_schema_answer_is_valid_whatever_the_weights(family_app, name: str) -> None:
    app, model = family_app(name)
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    body = ask(model, name, response_format=fmt, max_tokens=160, temperature=1.0, seed=7)
    resp = run(post(app, "/v1/chat/completions", body))
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)
    assert choice["finish_reason"] == "stop"


def test_r1_stream_puts_thinking_in_reasoning_content_within_budget(family_app) -> None:
    app, model = family_app("r1-distill")
    body = ask(
        model,
        "r1-distill",
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=40,
        max_reasoning_tokens=6,
        temperature=1.0,
        seed=3,
    )
    events = sse_events(run(post(app, "/v1/chat/completions", body)).text)
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    usage = events[-2]["usage"]
    assert "</think>" not in reasoning and "</think>" not in content and "<think>" not in content
    # the prompt opened the think block: everything up to the (forced) </think> is reasoning
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all(not d.get("reasoning_content") for d in deltas[first_content:])
    assert (
        1 <= usage["completion_tokens_details"]["reasoning_tokens"] <= 6 + 1
    )  # budget, plus the </think> token
    assert content  # after the budget the model goes on to answer
    assert usage["completion_tokens"] <= 40
