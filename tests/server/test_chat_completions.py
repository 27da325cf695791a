"""POST /v1/chat/completions in-process on FakeEngine: exact JSON and SSE shapes, every request field's effect,
reasoning and tool calls on the wire, and disconnects."""

from __future__ import annotations

import asyncio
import json
import time

from tests.server._support import get, post, run, sse_events, stream_then_disconnect

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def body(**kw):
    return {"model": "fake", "messages": [{"role": "user", "content": "Hi"}], **kw}


def normalise(event):
    """Blank the per-request id and timestamp so transcripts compare exactly."""
    if isinstance(event, dict):
        assert event["id"].startswith("chatcmpl-") and isinstance(event["created"], int)
        return {**event, "id": "ID", "created": 0}
    return event


def test_non_streamed_answer_has_openai_shape(fake_server) -> None:
    app, models = fake_server(["Hel", "lo"])
    resp = run(post(app, "/v1/chat/completions", body()))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    data = resp.json()
    prompt_tokens = len(models.engines["fake:latest"].requests[0].prompt)
    assert normalise(data) == {
        "id": "ID",
        "object": "chat.completion",
        "created": 0,
        "model": "fake:latest",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 2,
            "total_tokens": prompt_tokens + 2,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def test_stream_golden_transcript_with_usage(fake_server) -> None:
    app, models = fake_server(["Hel", "lo"])
    resp = run(post(app, "/v1/chat/completions", body(stream=True, stream_options={"include_usage": True})))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [normalise(e) for e in sse_events(resp.text)]
    p = len(models.engines["fake:latest"].requests[0].prompt)
    head = {"id": "ID", "object": "chat.completion.chunk", "created": 0, "model": "fake:latest"}

    def choice(delta, finish=None):
        return {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    assert events == [
        choice({"role": "assistant", "content": ""}),
        choice({"content": "Hel"}),
        choice({"content": "lo"}),
        choice({}, "stop"),
        {
            **head,
            "choices": [],
            "usage": {
                "prompt_tokens": p,
                "completion_tokens": 2,
                "total_tokens": p + 2,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        },
        "[DONE]",
    ]


def test_stream_without_include_usage_has_no_usage_key(fake_server) -> None:
    app, _ = fake_server(["a"])
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True))).text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, "stop"]


def test_n_two_streams_both_choices(fake_server) -> None:
    app, _ = fake_server(["x", "y"])
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True, n=2))).text)[:-1]
    texts: dict[int, str] = {0: "", 1: ""}
    roles = []
    for event in events:
        (c,) = event["choices"]
        texts[c["index"]] += c["delta"].get("content", "")
        if "role" in c["delta"]:
            roles.append(c["index"])
    assert texts == {0: "xy", 1: "xy"} and sorted(roles) == [0, 1]
    resp = run(post(app, "/v1/chat/completions", body(n=2)))
    assert [c["index"] for c in resp.json()["choices"]] == [0, 1]


def test_sampling_fields_reach_the_engine(fake_server) -> None:
    app, models = fake_server(["a"])
    fields = body(
        temperature=0.3,
        top_p=0.5,
        top_k=7,
        min_p=0.2,
        max_completion_tokens=9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias={"5": -100, "6": 3},
        stop="END",
        user="u1",
    )
    assert run(post(app, "/v1/chat/completions", fields)).status_code == 200
    s = models.engines["fake:latest"].requests[0].sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.max_tokens, s.seed) == (0.3, 0.5, 7, 0.2, 9, 42)
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (0.5, -0.5, 1.1)
    assert s.logit_bias == {5: -100.0, 6: 3.0} and s.stop == ["END"]
    run(post(app, "/v1/chat/completions", body(max_tokens=3)))
    assert models.engines["fake:latest"].requests[1].max_tokens == 3


def test_the_model_default_options_fill_what_the_request_leaves_out(fake_server) -> None:
    """A model's own parameters (an Ollama model's params: temperature, num_predict, stop ...) apply on the
    OpenAI endpoints as on Ollama's, under whatever the request sets itself."""
    defaults = {"temperature": 0.25, "num_predict": 11, "stop": ["<END>"], "seed": 5, "top_k": 9}
    app, models = fake_server(["a"], default_options=defaults)
    assert run(post(app, "/v1/chat/completions", body())).status_code == 200
    assert (
        run(
            post(app, "/v1/chat/completions", body(temperature=0.9, max_tokens=3, stop="X", seed=1))
        ).status_code
        == 200
    )
    assert run(post(app, "/v1/completions", {"model": "fake", "prompt": "Hi"})).status_code == 200
    assert run(post(app, "/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "Hi"}],
                                       "stream": False, "options": {"top_k": 2}})).status_code == 200  # fmt: skip
    first, overridden, completion, ollama = (r.sampling for r in models.engines["fake:latest"].requests)
    for s in (first, completion):
        assert (s.temperature, s.max_tokens, s.stop, s.seed, s.top_k) == (0.25, 11, ["<END>"], 5, 9)
    assert (overridden.temperature, overridden.max_tokens, overridden.stop, overridden.seed) == (
        0.9,
        3,
        ["X"],
        1,
    )
    assert overridden.top_k == 9  # not set by the request: still the model's
    assert (ollama.temperature, ollama.top_k, ollama.max_tokens) == (0.25, 2, 11)

    # what the model does not set keeps the API's default (legacy completions: 16 tokens)
    app, models = fake_server(["a"], default_options={"temperature": 0.25})
    assert run(post(app, "/v1/completions", {"model": "fake", "prompt": "Hi"})).status_code == 200
    (plain,) = (r.sampling for r in models.engines["fake:latest"].requests)
    assert (plain.temperature, plain.max_tokens) == (0.25, 16)


def test_stop_is_not_emitted_in_stream(fake_server) -> None:
    app, _ = fake_server(["one ", "tw", "o th", "ree"])
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True, stop=["two", "zzz"]))).text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "one "
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_in_message_and_stream(fake_server) -> None:
    app, _ = fake_server(["A", "B"])
    data = run(post(app, "/v1/chat/completions", body(logprobs=True, top_logprobs=1))).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert content == [
        {
            "token": "A",
            "logprob": 0.0,
            "bytes": [65],
            "top_logprobs": [{"token": "A", "logprob": 0.0, "bytes": [65]}],
        },
        {
            "token": "B",
            "logprob": 0.0,
            "bytes": [66],
            "top_logprobs": [{"token": "B", "logprob": 0.0, "bytes": [66]}],
        },
    ]
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True, logprobs=True))).text)
    lps = [e["choices"][0]["logprobs"] for e in events[:-1]]
    assert lps[0] is None and lps[1]["content"][0]["token"] == "A" and lps[-1] is None


def test_reasoning_goes_to_reasoning_content(fake_server) -> None:
    app, _ = fake_server(["<think>", "hmm", "</think>", "Paris"], template="Qwen-Qwen3-0.6B")
    data = run(post(app, "/v1/chat/completions", body())).json()
    msg = data["choices"][0]["message"]
    assert msg["content"] == "Paris" and msg["reasoning_content"] == "hmm"
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True))).text)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm"
    assert "".join(d.get("content", "") for d in deltas) == "Paris"


def test_reasoning_field_name_is_configurable(fake_server) -> None:
    app, _ = fake_server(
        ["<think>", "hmm", "</think>", "Paris"],
        template="Qwen-Qwen3-0.6B",
        settings={"reasoning_field": "reasoning"},
    )
    msg = run(post(app, "/v1/chat/completions", body())).json()["choices"][0]["message"]
    assert msg["reasoning"] == "hmm" and "reasoning_content" not in msg
    events = sse_events(run(post(app, "/v1/chat/completions", body(stream=True))).text)
    assert any("reasoning" in e["choices"][0]["delta"] for e in events[:-1])
    assert not any("reasoning_content" in e["choices"][0]["delta"] for e in events[:-1])


def test_assistant_reasoning_input_is_accepted(fake_server) -> None:
    app, models = fake_server(["ok"], template="Qwen-Qwen3-0.6B")
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2", "reasoning": "R2"},
        {"role": "user", "content": [{"type": "text", "text": "Q"}, {"type": "text", "text": "3"}]},
    ]
    resp = run(post(app, "/v1/chat/completions", {"model": "fake", "messages": messages}))
    assert resp.status_code == 200
    rendered = models.engines["fake:latest"].detokenize(models.engines["fake:latest"].requests[0].prompt)
    assert "Q3" in rendered and "A2" in rendered


def test_tool_calls_non_stream_and_stream(fake_server) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    app, _ = fake_server([call[:15], call[15:40], call[40:]])
    data = run(post(app, "/v1/chat/completions", body(tools=[WEATHER_TOOL]))).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (tc,) = choice["message"]["tool_calls"]
    assert tc["type"] == "function" and tc["id"].startswith("call_")
    assert tc["function"]["name"] == "get_weather" and json.loads(tc["function"]["arguments"]) == {
        "city": "Paris"
    }
    assert choice["message"]["content"] is None

    events = sse_events(run(post(app, "/v1/chat/completions", body(tools=[WEATHER_TOOL], stream=True))).text)
    deltas = [d for e in events[:-1] for d in e["choices"][0]["delta"].get("tool_calls", [])]
    first = deltas[0]
    assert set(first) == {"index", "id", "type", "function"} and first["function"]["name"] == "get_weather"
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in deltas[1:])
    args = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(args) == {"city": "Paris"}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_round_trip_messages_render(fake_server) -> None:
    app, models = fake_server(["It is sunny."])
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 25C"},
    ]
    resp = run(
        post(app, "/v1/chat/completions", {"model": "fake", "messages": messages, "tools": [WEATHER_TOOL]})
    )
    assert resp.status_code == 200
    engine = models.engines["fake:latest"]
    rendered = engine.detokenize(engine.requests[0].prompt)
    assert "sunny, 25C" in rendered and "get_weather" in rendered


def test_response_format_json_schema_sets_a_grammar(fake_server) -> None:
    app, models = fake_server(['{"n": 1}'])
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "n",
            "strict": True,
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
    }
    data = run(post(app, "/v1/chat/completions", body(response_format=fmt))).json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {"n": 1}
    assert models.engines["fake:latest"].requests[0].grammar


def test_unsupported_schema_keyword_is_400(fake_server) -> None:
    app, _ = fake_server(["x"])
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "string", "pattern": "(?<=a)b"}},
    }
    resp = run(post(app, "/v1/chat/completions", body(response_format=fmt)))
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_cached_tokens_reported_for_repeated_prompt(fake_server) -> None:
    app, _ = fake_server(["a"])
    run(post(app, "/v1/chat/completions", body()))
    usage = run(post(app, "/v1/chat/completions", body())).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def test_client_disconnect_mid_stream_frees_the_slot(fake_server) -> None:
    app, models = fake_server(["tok"] * 5000, delay=0.002)

    async def scenario() -> str:
        received = await stream_then_disconnect(
            app, "/v1/chat/completions", body(stream=True), after_chunks=5
        )
        assert len(received) < 100  # the stream stopped soon after the client left
        engine = models.engines["fake:latest"]
        deadline = time.time() + 3
        while engine.stats().running and time.time() < deadline:
            await asyncio.sleep(0.01)
        assert engine.stats().running == 0
        assert engine.requests[0].max_tokens is None
        return (await get(app, "/metrics")).text

    metrics = run(scenario())
    assert 'kaiyuan_requests_running{model="fake:latest"} 0.0' in metrics


def test_client_disconnect_during_non_streamed_request_cancels_it(fake_server) -> None:
    app, models = fake_server(["tok"] * 5000, delay=0.002)

    async def scenario() -> None:
        started = time.perf_counter()
        received = await stream_then_disconnect(app, "/v1/chat/completions", body(), after_chunks=0)
        assert time.perf_counter() - started < 5  # 5000 tokens at 2 ms each would take 10 s
        usage = json.loads(b"".join(received))["usage"]
        assert 0 < usage["completion_tokens"] < 2500
        assert models.engines["fake:latest"].stats().running == 0

    run(scenario())
