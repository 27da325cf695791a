"""The Anthropic skin in-process (FakeEngine): the ``message`` shape, the named stream events in the order the
``anthropic`` SDK requires (golden transcripts), tools, thinking, stop sequences, count_tokens, auth headers and
Anthropic's error envelope for every bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server._support import client, post, run

WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "fake", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}], **kw}


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per SSE block; every block must carry both lines."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        out.append((name_line[len("event: ") :], data))
    return out


def test_message_has_anthropic_shape(fake_server) -> None:
    app, _ = fake_server(["Hello", " world"])
    resp = run(post(app, "/v1/messages", body(system="Be brief.")))
    assert resp.status_code == 200
    data = resp.json()
    assert data["id"].startswith("msg_") and data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == "fake:latest"
    assert data["content"] == [{"type": "text", "text": "Hello world"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    usage = data["usage"]
    assert usage["output_tokens"] == 2 and usage["input_tokens"] > 0
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] == 0


def test_stream_golden_transcript(fake_server) -> None:
    app, _ = fake_server(["Hello", " world"])
    events = named_events(run(post(app, "/v1/messages", body(stream=True))).text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [e["delta"] for _, e in events[3:5]] == [
        {"type": "text_delta", "text": "Hello"},
        {"type": "text_delta", "text": " world"},
    ]
    delta = events[6][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 2


def test_thinking_blocks_with_signature_then_text(fake_server) -> None:
    # with a budget the think block is opened in the prompt, so the model's first token is already thinking
    app, models = fake_server(["hmm", "</think>", "Paris"], template="Qwen-Qwen3-0.6B")
    thinking_on = {"type": "enabled", "budget_tokens": 32}
    data = run(post(app, "/v1/messages", body(thinking=thinking_on))).json()
    thinking, text = data["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "hmm" and thinking["signature"]
    assert text == {"type": "text", "text": "Paris"}
    assert models.engines["fake:latest"].requests[0].think_budget.max_tokens == 32

    events = named_events(run(post(app, "/v1/messages", body(stream=True, thinking=thinking_on))).text)
    blocks = [(e["index"], e["content_block"]["type"]) for n, e in events if n == "content_block_start"]
    assert blocks == [(0, "thinking"), (1, "text")]
    deltas = [(e["index"], e["delta"]["type"]) for n, e in events if n == "content_block_delta"]
    assert deltas == [(0, "thinking_delta"), (0, "signature_delta"), (1, "text_delta")]
    stops = [e["index"] for n, e in events if n == "content_block_stop"]
    assert stops == [0, 1]


def test_tool_use_non_stream_and_stream(fake_server) -> None:
    app, models = fake_server([CALL[:15], CALL[15:40], CALL[40:]])
    data = run(post(app, "/v1/messages", body(tools=[WEATHER], tool_choice={"type": "any"}))).json()
    assert data["stop_reason"] == "tool_use"
    (use,) = data["content"]
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_")
    assert use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
    assert models.engines["fake:latest"].requests[0].grammar  # "any" is enforced

    events = named_events(run(post(app, "/v1/messages", body(tools=[WEATHER], stream=True))).text)
    (start,) = [e for n, e in events if n == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    partial = "".join(e["delta"]["partial_json"] for n, e in events if n == "content_block_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert next(e for n, e in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


def test_named_tool_choice_keeps_the_name(fake_server) -> None:
    app, models = fake_server([CALL])
    other = {**WEATHER, "name": "get_time"}
    resp = run(
        post(
            app,
            "/v1/messages",
            body(tools=[other, WEATHER], tool_choice={"type": "tool", "name": "get_weather"}),
        )
    )
    assert resp.status_code == 200
    grammar = models.engines["fake:latest"].requests[0].grammar
    assert "get_weather" in grammar and "get_time" not in grammar


def test_tool_round_trip_renders_results_and_errors(fake_server) -> None:
    app, models = fake_server(["It is sunny."])
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "x"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 25C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no data"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]
    resp = run(post(app, "/v1/messages", body(messages=messages, tools=[WEATHER])))
    assert resp.status_code == 200, resp.text
    engine = models.engines["fake:latest"]
    rendered = engine.detokenize(engine.requests[0].prompt)
    assert "sunny, 25C" in rendered and "Error: no data" in rendered and "Summarise." in rendered
    assert rendered.index("sunny, 25C") < rendered.index("Error: no data") < rendered.index("Summarise.")


def test_stop_sequence_is_reported(fake_server) -> None:
    app, _ = fake_server(["one", " two", " END", " three"])
    data = run(post(app, "/v1/messages", body(stop_sequences=["END"]))).json()
    assert data["content"] == [{"type": "text", "text": "one two "}]
    assert data["stop_reason"] == "stop_sequence" and data["stop_sequence"] == "END"
    events = named_events(run(post(app, "/v1/messages", body(stop_sequences=["END"], stream=True))).text)
    (delta,) = [e for n, e in events if n == "message_delta"]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_max_tokens_stop_reason(fake_server) -> None:
    app, _ = fake_server(["a", "b", "c", "d"])
    data = run(post(app, "/v1/messages", body(max_tokens=2))).json()
    assert data["stop_reason"] == "max_tokens" and data["usage"]["output_tokens"] == 2


def test_count_tokens_counts_the_rendered_prompt(fake_server) -> None:
    app, _ = fake_server(["x"])
    short = run(
        post(
            app,
            "/v1/messages/count_tokens",
            {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]},
        )
    )
    long = run(
        post(
            app,
            "/v1/messages/count_tokens",
            {
                "model": "fake",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [WEATHER],
                "system": "S",
            },
        )
    )
    assert short.status_code == 200 and set(short.json()) == {"input_tokens"}
    assert long.json()["input_tokens"] > short.json()["input_tokens"] > 0
    full = run(post(app, "/v1/messages", body())).json()
    assert full["usage"]["input_tokens"] == short.json()["input_tokens"]


def test_other_roles_are_mapped_and_headers_accepted(fake_server) -> None:
    app, models = fake_server(["ok"])
    messages = [{"role": "system", "content": "Rules."}, {"role": "user", "content": "Hi"}]
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    resp = run(post(app, "/v1/messages?beta=true", body(messages=messages), headers=headers))
    assert resp.status_code == 200, resp.text
    engine = models.engines["fake:latest"]
    assert "Rules." in engine.detokenize(engine.requests[0].prompt)


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}, 400, "max_tokens"),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}],
                    }
                ]
            ),
            400,
            "vision",
        ),
        (body(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), 400, "messages[0].content"),
        (body(tool_choice={"type": "tool", "name": "nope"}, tools=[WEATHER]), 400, "nope"),
        (body(tool_choice={"type": "any"}), 400, "at least one tool"),
        (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), 400, "server tool"),
        (body(thinking={"type": "enabled", "budget_tokens": 300}), 400, "less than max_tokens"),
        (body(mcp_servers=[{"type": "url", "url": "http://169.254.169.254/"}]), 400, "mcp_servers"),
        (body(stop_sequences=["x"] * 17), 400, "stop sequences"),
        # 10,000 messages: measured against the context window, a clean 400 (no item cap of its own)
        (
            body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}] * 5000),
            400,
            "context window",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}] * 20000}]),
            400,
            "context window",
        ),
        (body(model="nope"), 404, "nope"),
        ("{not json", 400, "not valid JSON"),
    ],
)
def test_errors_use_the_anthropic_envelope(fake_server, payload: Any, status: int, needle: str) -> None:
    app, _ = fake_server(["x"])
    resp = run(post(app, "/v1/messages", payload, headers={"content-type": "application/json"}))
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert data["type"] == "error" and set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert needle in data["error"]["message"]


def test_api_key_by_x_api_key_or_bearer(fake_server) -> None:
    app, _ = fake_server(["ok"], settings={"api_key": "sesame"})

    async def go() -> list[Any]:
        async with client(app) as c:
            return [
                await c.post("/v1/messages", json=body()),
                await c.post("/v1/messages", json=body(), headers={"x-api-key": "wrong"}),
                await c.post("/v1/messages", json=body(), headers={"x-api-key": "sesame"}),
                await c.post("/v1/messages", json=body(), headers={"Authorization": "Bearer sesame"}),
                await c.get("/v1/models", headers={"x-api-key": "sesame"}),
            ]

    missing, wrong, by_key, by_bearer, models = run(go())
    for denied in (missing, wrong):
        assert denied.status_code == 401
        assert denied.json()["type"] == "error" and denied.json()["error"]["type"] == "authentication_error"
    assert by_key.status_code == by_bearer.status_code == models.status_code == 200


def test_output_config_format_is_enforced_by_a_grammar(fake_server) -> None:
    app, models = fake_server(['{"n": 1}'])
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    resp = run(
        post(app, "/v1/messages", body(output_config={"format": {"type": "json_schema", "schema": schema}}))
    )
    assert resp.status_code == 200 and json.loads(resp.json()["content"][0]["text"]) == {"n": 1}
    assert models.engines["fake:latest"].requests[0].grammar
