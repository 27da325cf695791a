"""The Ollama skin in process on FakeEngine: /api/chat and /api/generate (NDJSON and single object, thinking,
tools with object arguments, format grammars, options, num_ctx, raw, load/unload), /api/embed, /api/embeddings,
keep_alive, and the ``{"error": ...}`` envelope with Ollama's status codes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any

import pytest

from kaiyuan.protocol import convert_ollama
from kaiyuan.server._ndjson import ndjson_lines
from tests.server._support import client, post, run, stream_then_disconnect

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
USER = [{"role": "user", "content": "Hi"}]


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": USER, **kw}


# -- chat --------------------------------------------------------------------------------------------------------


def test_chat_streams_ndjson_by_default(fake_server) -> None:
    app, _ = fake_server(["Hel", "lo", "!"])
    resp = run(post(app, "/api/chat", chat()))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    objs = lines(resp.text)
    assert [o["message"]["content"] for o in objs] == ["Hel", "lo", "!", ""]
    assert all(o["model"] == "fake:latest" and o["message"]["role"] == "assistant" for o in objs)
    assert [o["done"] for o in objs] == [False, False, False, True]
    assert all("done_reason" not in o and "eval_count" not in o for o in objs[:-1])
    final = objs[-1]
    assert final["done_reason"] == "stop" and final["eval_count"] == 3 and final["prompt_eval_count"] > 0
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] >= 0
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]
    datetime.fromisoformat(final["created_at"].replace("Z", "+00:00"))


def test_chat_without_stream_is_one_object(fake_server) -> None:
    app, _ = fake_server(["Hel", "lo", "!"])
    resp = run(post(app, "/api/chat", chat(stream=False)))
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["message"] == {"role": "assistant", "content": "Hello!"}
    assert data["done"] is True and data["done_reason"] == "stop" and data["eval_count"] == 3


def test_thinking_goes_to_the_thinking_field(fake_server) -> None:
    app, models = fake_server(["<think>", "hmm", "</think>", "Paris"], template="Qwen-Qwen3-0.6B")
    data = run(post(app, "/api/chat", chat(stream=False, think=True))).json()
    assert data["message"]["content"] == "Paris" and data["message"]["thinking"] == "hmm"
    objs = lines(run(post(app, "/api/chat", chat())).text)
    assert "".join(o["message"].get("thinking", "") for o in objs) == "hmm"
    assert "".join(o["message"]["content"] for o in objs) == "Paris"
    # think: false tells templates with a switch (Qwen3: enable_thinking) to write an empty think block ...
    run(post(app, "/api/chat", chat(stream=False, think=False)))
    engine = models.engines["fake:latest"]
    assert engine.detokenize(engine.requests[-1].prompt).endswith("<think>\n\n</think>\n\n")
    run(post(app, "/api/chat", chat(stream=False, think="low")))
    assert engine.requests[-1].think_budget.max_tokens == 512


def test_think_false_closes_the_thinking_of_models_without_a_switch(fake_server) -> None:
    # ... and models that always think (DeepSeek-R1 distills open <think> in the prompt) get it closed at once.
    app, models = fake_server(["Paris"], template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    data = run(post(app, "/api/chat", chat(stream=False, think=False))).json()
    engine = models.engines["fake:latest"]
    assert engine.detokenize(engine.requests[-1].prompt).endswith("<think>\n</think>")
    assert data["message"] == {"role": "assistant", "content": "Paris"}


def test_think_on_a_model_without_thinking_is_400(fake_server) -> None:
    app, _ = fake_server(["x"])  # Qwen2.5: no think block
    resp = run(post(app, "/api/chat", chat(think=True)))
    assert resp.status_code == 400 and resp.json() == {"error": '"fake:latest" does not support thinking'}
    assert run(post(app, "/api/chat", chat(think=False, stream=False))).status_code == 200


def test_tool_calls_have_object_arguments(fake_server) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    app, _ = fake_server([call[:15], call[15:40], call[40:]])
    data = run(post(app, "/api/chat", chat(stream=False, tools=[WEATHER_TOOL]))).json()
    (tc,) = data["message"]["tool_calls"]
    assert tc["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert tc["id"].startswith("call_") and data["message"]["content"] == "" and data["done_reason"] == "stop"

    objs = lines(run(post(app, "/api/chat", chat(tools=[WEATHER_TOOL]))).text)
    with_calls = [o for o in objs if o["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"]  # each call is sent once, whole
    assert with_calls[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert objs[-1]["done"] and objs[-1]["done_reason"] == "stop"


def test_parallel_tool_calls_stream_one_object_per_completed_call(fake_server) -> None:
    calls = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
    ]
    app, _ = fake_server(calls)
    objs = lines(run(post(app, "/api/chat", chat(tools=[WEATHER_TOOL]))).text)
    sent = [tc for o in objs for tc in o["message"].get("tool_calls", [])]
    assert [(tc["function"]["index"], tc["function"]["arguments"]["city"]) for tc in sent] == [
        (0, "Paris"),
        (1, "Rome"),
    ]


def test_tool_history_with_object_arguments_and_tool_name_renders(fake_server) -> None:
    app, models = fake_server(["It is sunny."])
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 25C"},
    ]
    resp = run(post(app, "/api/chat", {"model": "fake", "messages": messages, "tools": [WEATHER_TOOL]}))
    assert resp.status_code == 200
    engine = models.engines["fake:latest"]
    rendered = engine.detokenize(engine.requests[0].prompt)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in rendered
    assert "sunny, 25C" in rendered


def test_format_json_and_schema_are_enforced_by_grammar(fake_server) -> None:
    app, models = fake_server(['{"city": "Paris"}'])
    engine_requests = lambda: models.engines["fake:latest"].requests  # noqa: E731
    run(post(app, "/api/chat", chat(stream=False, format="json")))
    assert engine_requests()[-1].grammar.startswith('root ::= "{"')
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    data = run(post(app, "/api/chat", chat(stream=False, format=schema))).json()
    assert json.loads(data["message"]["content"]) == {"city": "Paris"}
    assert '\\"city\\"' in engine_requests()[-1].grammar
    run(post(app, "/api/generate", {"model": "fake", "prompt": "x", "format": "json", "stream": False}))
    assert engine_requests()[-1].grammar
    bad = run(post(app, "/api/chat", chat(format="yaml")))
    assert bad.status_code == 400 and "format" in bad.json()["error"]


def test_options_reach_the_engine(fake_server, caplog: pytest.LogCaptureFixture) -> None:
    app, models = fake_server(["a"] * 20)
    options = {
        "temperature": 0.3,
        "top_k": 7,
        "top_p": 0.5,
        "min_p": 0.1,
        "seed": 42,
        "repeat_penalty": 1.3,
        "presence_penalty": 0.4,
        "frequency_penalty": 0.6,
        "num_predict": 5,
        "mirostat": 2,
        "no_such_option": 1,
    }
    with caplog.at_level(logging.WARNING, logger="kaiyuan"):
        data = run(post(app, "/api/chat", chat(stream=False, options=options))).json()
    assert data["eval_count"] == 5 and data["done_reason"] == "length"
    sampling = models.engines["fake:latest"].requests[-1].sampling
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p, sampling.seed) == (
        0.3,
        7,
        0.5,
        0.1,
        42,
    )
    assert (sampling.repetition_penalty, sampling.presence_penalty, sampling.frequency_penalty) == (
        1.3,
        0.4,
        0.6,
    )
    assert sampling.max_tokens == 5
    text = caplog.text
    assert "'mirostat' is accepted but has no effect" in text and "'no_such_option'" in text
    # num_predict -1 means no limit; a negative seed means random.
    run(post(app, "/api/chat", chat(stream=False, options={"num_predict": -1, "seed": -1})))
    last = models.engines["fake:latest"].requests[-1]
    assert last.sampling.max_tokens is None and last.sampling.seed is None


def test_stop_strings_are_not_emitted(fake_server) -> None:
    app, _ = fake_server(["Hel", "lo", " wor", "ld"])
    objs = lines(run(post(app, "/api/chat", chat(options={"stop": ["o w"]}))).text)
    assert "".join(o["message"]["content"] for o in objs) == "Hell"
    assert objs[-1]["done_reason"] == "stop"


def test_num_ctx_caps_the_context_of_the_request(fake_server) -> None:
    app, models = fake_server(["a"] * 50)
    whole = run(
        post(app, "/api/generate", {"model": "fake", "prompt": "Hi", "raw": True, "stream": False})
    ).json()
    n_prompt = whole["prompt_eval_count"]
    data = run(
        post(
            app,
            "/api/generate",
            {
                "model": "fake",
                "prompt": "Hi",
                "raw": True,
                "stream": False,
                "options": {"num_ctx": n_prompt + 3},
            },
        )
    ).json()
    assert data["eval_count"] == 3 and data["done_reason"] == "length"
    resp = run(post(app, "/api/chat", chat(options={"num_ctx": 4})))
    assert resp.status_code == 400 and "num_ctx is 4" in resp.json()["error"]
    # A num_ctx above the loaded context cannot grow it: the request runs in the loaded window.
    assert run(post(app, "/api/chat", chat(stream=False, options={"num_ctx": 10**6}))).status_code == 200
    assert models.engines["fake:latest"].n_ctx == 4096


# -- generate ----------------------------------------------------------------------------------------------------


def test_generate_templated_and_raw(fake_server) -> None:
    app, models = fake_server(["Bon", "jour"])
    engine = lambda: models.engines["fake:latest"]  # noqa: E731
    objs = lines(
        run(post(app, "/api/generate", {"model": "fake", "prompt": "Say hi", "system": "Be French."})).text
    )
    assert [o["response"] for o in objs] == ["Bon", "jour", ""] and objs[-1]["done_reason"] == "stop"
    rendered = engine().detokenize(engine().requests[-1].prompt)
    assert "<|im_start|>system\nBe French.<|im_end|>" in rendered and "<|im_start|>user\nSay hi" in rendered
    data = run(
        post(app, "/api/generate", {"model": "fake", "prompt": "RAW TEXT", "raw": True, "stream": False})
    ).json()
    assert data["response"] == "Bonjour" and "context" not in data
    assert engine().detokenize(engine().requests[-1].prompt) == "<s>RAW TEXT"


def test_generate_thinking(fake_server) -> None:
    app, _ = fake_server(["<think>", "hmm", "</think>", "Paris"], template="Qwen-Qwen3-0.6B")
    data = run(post(app, "/api/generate", {"model": "fake", "prompt": "Capital?", "stream": False})).json()
    assert data["response"] == "Paris" and data["thinking"] == "hmm"


def test_generate_rejects_what_it_cannot_do(fake_server) -> None:
    app, _ = fake_server(["x"])
    cases = [
        ({"suffix": "    return x"}, "suffix (fill-in-the-middle) is not supported"),
        ({"images": ["aGVsbG8="]}, "images are not supported"),
        ({"template": "{{ .Prompt }}"}, "template overrides (Go templates) are not supported"),
        ({"raw": True, "system": "S"}, "raw mode does not support system"),
    ]
    for extra, message in cases:
        resp = run(post(app, "/api/generate", {"model": "fake", "prompt": "p", **extra}))
        assert resp.status_code == 400 and message in resp.json()["error"], extra
    image_chat = chat(messages=[{"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}])
    resp = run(post(app, "/api/chat", image_chat))
    assert resp.status_code == 400 and "images are not supported" in resp.json()["error"]


def test_generate_context_is_ignored_with_a_log(fake_server, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = fake_server(["ok"])
    with caplog.at_level(logging.INFO, logger="kaiyuan"):
        data = run(
            post(
                app, "/api/generate", {"model": "fake", "prompt": "p", "context": [1, 2, 3], "stream": False}
            )
        )
    assert data.json()["response"] == "ok" and "ignoring Ollama 'context' (3 tokens)" in caplog.text


# -- load, unload, keep_alive ------------------------------------------------------------------------------------


def test_empty_requests_load_and_unload(fake_server) -> None:
    app, models = fake_server(["x"])

    async def scenario() -> None:
        async with client(app) as c:
            loaded = (await c.post("/api/generate", json={"model": "fake"})).json()
            assert loaded["done"] and loaded["done_reason"] == "load" and loaded["response"] == ""
            assert [m["name"] for m in (await c.get("/api/ps")).json()["models"]] == ["fake:latest"]
            unloaded = (
                await c.post("/api/chat", json={"model": "fake", "messages": [], "keep_alive": 0})
            ).json()
            assert unloaded["done_reason"] == "unload" and unloaded["message"] == {
                "role": "assistant",
                "content": "",
            }
            assert (await c.get("/api/ps")).json()["models"] == []

    run(scenario())
    assert models.loads == ["fake:latest"]


def test_keep_alive_unloads_after_the_idle_time(fake_server) -> None:
    app, models = fake_server(["x"])

    async def scenario() -> None:
        async with client(app) as c:
            await c.post("/api/chat", json=chat(stream=False, keep_alive=0.3))
            (entry,) = (await c.get("/api/ps")).json()["models"]
            expires = datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")).timestamp()
            assert 0 < expires - time.time() < 1
            await asyncio.sleep(0.8)
            assert (await c.get("/api/ps")).json()["models"] == []
            await c.post("/api/chat", json=chat(stream=False, keep_alive="-1"))
            (entry,) = (await c.get("/api/ps")).json()["models"]
            assert entry["expires_at"] > "2200"
            await c.post("/api/chat", json=chat(stream=False, keep_alive=0))
            await asyncio.sleep(0.1)
            assert (await c.get("/api/ps")).json()["models"] == []

    run(scenario())
    assert models.loads == ["fake:latest", "fake:latest"]


def test_keep_alive_zero_waits_for_running_requests(fake_server) -> None:
    app, _ = fake_server(["t"] * 30, delay=0.01)

    async def scenario() -> None:
        async with client(app) as c:
            slow = asyncio.create_task(c.post("/api/chat", json=chat(stream=False)))
            await asyncio.sleep(0.05)
            await c.post("/api/chat", json=chat(stream=False, keep_alive=0, options={"num_predict": 1}))
            data = (await slow).json()
            assert data["eval_count"] == 30  # the slow request finished on the model
            await asyncio.sleep(0.5)
            assert (await c.get("/api/ps")).json()["models"] == []

    run(scenario())


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("0", 0.0),
        ("-1", convert_ollama.FOREVER),
        (-1, convert_ollama.FOREVER),
        ("-5m", convert_ollama.FOREVER),
        ("2", 2.0),
    ],
)
def test_keep_alive_values(value: Any, seconds: float | None) -> None:
    assert convert_ollama.parse_keep_alive(value) == seconds


def test_bad_keep_alive_is_400(fake_server) -> None:
    app, _ = fake_server(["x"])
    for value in ("soon", "", "5 minutes"):
        resp = run(post(app, "/api/chat", chat(keep_alive=value)))
        assert resp.status_code == 400 and "keep_alive" in resp.json()["error"], value


# -- embeddings --------------------------------------------------------------------------------------------------


def test_embed_and_legacy_embeddings(fake_server) -> None:
    app, _ = fake_server(["x"])
    data = run(post(app, "/api/embed", {"model": "fake", "input": ["hello", "world"]})).json()
    assert data["model"] == "fake:latest" and len(data["embeddings"]) == 2
    assert all(abs(sum(v * v for v in vec) - 1) < 1e-6 for vec in data["embeddings"])
    assert data["prompt_eval_count"] == 2 * 1 + len("hello") + len("world")  # BOS + bytes, per input
    one = run(post(app, "/api/embed", {"model": "fake", "input": "hello"})).json()["embeddings"]
    assert one == data["embeddings"][:1]
    short = run(post(app, "/api/embed", {"model": "fake", "input": "hello", "dimensions": 8})).json()[
        "embeddings"
    ][0]
    assert len(short) == 8 and abs(sum(v * v for v in short) - 1) < 1e-6
    too_many = run(post(app, "/api/embed", {"model": "fake", "input": "hello", "dimensions": 4096}))
    assert too_many.status_code == 400 and "dimensions" in too_many.json()["error"]
    assert run(post(app, "/api/embed", {"model": "fake", "input": ""})).json()["embeddings"] == []
    assert run(post(app, "/api/embed", {"model": "fake", "input": ["a", ""]})).status_code == 400
    legacy = run(post(app, "/api/embeddings", {"model": "fake", "prompt": "hello"})).json()
    assert legacy == {"embedding": pytest.approx(data["embeddings"][0])}
    assert run(post(app, "/api/embeddings", {"model": "fake", "prompt": ""})).json() == {"embedding": []}


# -- errors --------------------------------------------------------------------------------------------------------


def test_errors_use_ollama_envelope_and_status(fake_server) -> None:
    app, _ = fake_server(["x"])
    cases = [
        ("/api/chat", {"model": "nope", "messages": USER}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, "model 'nope' not found"),
        ("/api/chat", {"messages": USER}, 400, "model is required"),
        ("/api/chat", chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
        ("/api/chat", chat(options={"temperature": "hot"}), 400, "options.temperature"),
        ("/api/chat", chat(top_logprobs=50), 400, "top_logprobs"),
        ("/api/chat", b"{not json", 400, "invalid JSON"),
        ("/api/chat", b"", 400, "missing request body"),
        ("/api/chat", b"\xb7\xff", 400, "not valid JSON"),
    ]
    for path, body, status, message in cases:
        resp = run(post(app, path, body, headers={"content-type": "application/json"}))
        assert resp.status_code == status, (body, resp.text)
        data = resp.json()
        assert set(data) == {"error"} and isinstance(data["error"], str) and message in data["error"], (
            body,
            data,
        )


def test_api_key_is_required_on_api_routes(fake_server) -> None:
    app, _ = fake_server(["x"], settings={"api_key": "k"})
    resp = run(post(app, "/api/chat", chat()))
    assert resp.status_code == 401 and "API key" in resp.json()["error"]
    ok = run(post(app, "/api/chat", chat(stream=False), headers={"Authorization": "Bearer k"}))
    assert ok.status_code == 200


def test_error_mid_stream_is_one_error_line() -> None:
    from kaiyuan.errors import EngineError
    from kaiyuan.protocol import ollama as ol

    async def objects() -> Any:
        yield ol.ProgressResponse(status="pulling manifest")
        raise EngineError("the engine broke")

    async def collect() -> list[bytes]:
        return [line async for line in ndjson_lines(objects())]

    assert [json.loads(b) for b in run(collect())] == [
        {"status": "pulling manifest"},
        {"error": "the engine broke"},
    ]


def test_client_disconnect_mid_stream_cancels_the_generation(fake_server) -> None:
    app, models = fake_server(["tok"] * 5000, delay=0.002)

    async def scenario() -> None:
        received = await stream_then_disconnect(app, "/api/chat", chat(), after_chunks=5)
        assert len(received) < 100
        engine = models.engines["fake:latest"]
        deadline = time.time() + 3
        while engine.stats().running and time.time() < deadline:
            await asyncio.sleep(0.01)
        assert engine.stats().running == 0

    run(scenario())


def test_logprobs(fake_server) -> None:
    app, _ = fake_server(["A", "B"])
    data = run(post(app, "/api/chat", chat(stream=False, logprobs=True, top_logprobs=1))).json()
    assert [lp["token"] for lp in data["logprobs"]] == ["A", "B"]
    assert data["logprobs"][0] == {
        "token": "A",
        "logprob": 0.0,
        "bytes": [65],
        "top_logprobs": [{"token": "A", "logprob": 0.0, "bytes": [65]}],
    }
    objs = lines(run(post(app, "/api/generate", {"model": "fake", "prompt": "x", "logprobs": True})).text)
    assert [o["logprobs"][0]["token"] for o in objs[:-1]] == ["A", "B"] and "logprobs" not in objs[-1]
    plain = run(post(app, "/api/chat", chat(stream=False))).json()
    assert "logprobs" not in plain
