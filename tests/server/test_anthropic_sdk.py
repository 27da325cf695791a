"""A real ``kaiyuan serve`` process (llama.cpp, 1 thread) driven by the official ``anthropic`` SDK: the bundled
SmolLM2 for text, stop sequences, tools (``any`` and a named tool), count_tokens and both auth headers, and a
tiny random-weight model with DeepSeek-R1's chat template for thinking blocks (its words are noise: the tests
check the blocks, never what they say)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.fixtures import tiny_gguf
from tests.server.test_openai_sdk_integration import Server, start_server

pytestmark = pytest.mark.slow

MODEL = "smollm2"
R1 = "r1-tiny"
KEY = "sesame"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {
    "name": "get_time",
    "description": "Get the local time of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "Name three colours."}]


def import_r1_tiny(home: Path, tiny_gguf_factory: Callable[..., Path]) -> None:
    """Import a tiny random-weight qwen2 model with DeepSeek-R1's chat template into ``home`` as ``r1-tiny``."""
    r1 = tiny_gguf_factory(
        arch="qwen2",
        chat_template=tiny_gguf.template_text("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"),
        extra_special_tokens=["<think>", "</think>"],
        license={"id": "mit", "name": "MIT License", "link": "https://opensource.org/license/mit"},
        name=R1,
    )
    env = {"KAIYUAN_HOME": str(home), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "kaiyuan", "import", str(r1), "--name", R1]
    subprocess.run(cmd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf_factory: Callable[..., Path]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("anthropic-home")
    import_r1_tiny(home, tiny_gguf_factory)
    yield from start_server(home, "--parallel", "2", "--max-loaded", "2", api_key=KEY)


def sdk(server: Server, **kw: object) -> anthropic.Anthropic:
    """The SDK as Claude Code configures it: ANTHROPIC_BASE_URL = the server, the key as x-api-key."""
    options: dict[str, object] = {"api_key": KEY, **kw}
    return anthropic.Anthropic(base_url=server.url, max_retries=0, **options)  # type: ignore[arg-type]


def test_create_and_stream_agree_at_temperature_zero(server: Server) -> None:
    client = sdk(server)
    whole = client.messages.create(model=MODEL, max_tokens=24, extra_body={"temperature": 0}, messages=ASK)
    assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
    (block,) = whole.content
    assert block.type == "text" and block.text
    assert whole.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(
        model=MODEL, max_tokens=24, extra_body={"temperature": 0}, messages=ASK
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == block.text == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    # the same prompt again: most of it is read from the prefix cache, and Anthropic counts that apart
    assert final.usage.cache_read_input_tokens and final.usage.cache_read_input_tokens > 0
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == (
        whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
    )


def test_stop_sequence_reported(server: Server) -> None:
    client = sdk(server)
    free = client.messages.create(model=MODEL, max_tokens=32, extra_body={"temperature": 0}, messages=ASK)
    text = free.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = client.messages.create(
        model=MODEL, max_tokens=32, extra_body={"temperature": 0}, messages=ASK, stop_sequences=[stop]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    with client.messages.stream(
        model=MODEL, max_tokens=32, extra_body={"temperature": 0}, messages=ASK, stop_sequences=[stop]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop


def test_tool_choice_any_and_named(server: Server) -> None:
    client = sdk(server)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = client.messages.create(
        model=MODEL,
        max_tokens=128,
        extra_body={"temperature": 0},
        messages=ask,
        tools=[WEATHER, TIME],
        tool_choice={"type": "any"},
    )
    assert forced.stop_reason == "tool_use"
    uses = [b for b in forced.content if b.type == "tool_use"]
    assert uses and uses[0].name in ("get_weather", "get_time") and isinstance(uses[0].input, dict)

    with client.messages.stream(
        model=MODEL,
        max_tokens=128,
        extra_body={"temperature": 0},
        messages=ask,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time"},
    ) as stream:
        final = stream.get_final_message()
    named = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and named
    assert {b.name for b in named} == {"get_time"}
    assert isinstance(named[0].input, dict) and "city" in named[0].input

    # the call goes back with its result, and the model answers in text
    answer = client.messages.create(
        model=MODEL,
        max_tokens=32,
        extra_body={"temperature": 0},
        tools=[WEATHER, TIME],
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in named]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": named[0].id, "content": "14:00"}],
            },
        ],
    )
    assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_thinking_blocks_with_r1_template(server: Server) -> None:
    client = sdk(server)
    thinking = {"type": "enabled", "budget_tokens": 8}
    whole = client.messages.create(model=R1, max_tokens=24, messages=ASK, thinking=thinking)  # type: ignore[arg-type]
    kinds = [b.type for b in whole.content]
    assert kinds[0] == "thinking" and "tool_use" not in kinds
    assert whole.content[0].signature  # type: ignore[union-attr]
    with client.messages.stream(model=R1, max_tokens=24, messages=ASK, thinking=thinking) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking  # type: ignore[union-attr]
    assert any(e.type == "content_block_delta" and e.delta.type == "signature_delta" for e in events)  # type: ignore[union-attr]


def test_count_tokens_matches_usage(server: Server) -> None:
    client = sdk(server)
    counted = client.messages.count_tokens(model=MODEL, messages=ASK, system="Answer briefly.")
    made = client.messages.create(model=MODEL, max_tokens=1, messages=ASK, system="Answer briefly.")
    assert counted.input_tokens == made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0)
    with_tools = client.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens - 10


def test_both_auth_headers_and_errors(server: Server) -> None:
    bearer = anthropic.Anthropic(base_url=server.url, auth_token=KEY, api_key=None, max_retries=0)
    assert bearer.messages.create(model=MODEL, max_tokens=4, messages=ASK).content
    with pytest.raises(anthropic.AuthenticationError) as denied:
        sdk(server, api_key="wrong").messages.create(model=MODEL, max_tokens=4, messages=ASK)
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        sdk(server).messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=ASK)
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk(server).messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}
            ],
        )
    assert "vision" in bad.value.message


def test_hostile_inputs_get_4xx(server: Server) -> None:
    url = server.url + "/v1/messages"
    headers = {"x-api-key": KEY}
    huge = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x " * 200_000}]}
    cases = [
        huge,
        {
            "model": MODEL,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "nope"}]}] * 500,
        },
        {"model": MODEL, "max_tokens": -1, "messages": ASK},
        {"model": MODEL, "max_tokens": 8, "messages": []},
        {
            "model": MODEL,
            "max_tokens": 8,
            "messages": ASK,
            "tools": [{"name": "bad name!", "input_schema": {}}],
        },
        {"model": MODEL, "max_tokens": 8, "messages": ASK, "temperature": 7},
    ]
    for payload in cases:
        resp = httpx.post(url, json=payload, headers=headers, timeout=60)
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:200])
        assert resp.json()["type"] == "error"
    resp = httpx.post(url, content=b"\xff\xfe", headers={**headers, "content-type": "application/json"})
    assert resp.status_code == 400 and json.loads(resp.text)["error"]["type"] == "invalid_request_error"
