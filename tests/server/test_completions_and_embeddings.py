"""POST /v1/completions (legacy prompt API) and POST /v1/embeddings on FakeEngine."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from tests.server._support import post, run, sse_events


def test_completion_shape_and_raw_prompt(fake_server) -> None:
    app, models = fake_server([" sat", " down"])
    data = run(post(app, "/v1/completions", {"model": "fake", "prompt": "The cat", "max_tokens": 5})).json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert data["choices"] == [{"text": " sat down", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    engine = models.engines["fake:latest"]
    assert engine.detokenize(engine.requests[0].prompt) == "<s>The cat"  # no chat template, BOS added
    assert engine.requests[0].max_tokens == 5
    assert (
        data["usage"]["prompt_tokens"] == len(engine.requests[0].prompt)
        and data["usage"]["completion_tokens"] == 2
    )


def test_completion_default_max_tokens_is_openais_16(fake_server) -> None:
    app, _ = fake_server(["x"] * 40)
    data = run(post(app, "/v1/completions", {"model": "fake", "prompt": "go"})).json()
    assert data["choices"][0]["text"] == "x" * 16 and data["choices"][0]["finish_reason"] == "length"


def test_completion_echo_stop_and_prompt_list(fake_server) -> None:
    app, _ = fake_server([" A", " B", " C"])
    data = run(
        post(app, "/v1/completions", {"model": "fake", "prompt": ["Q:"], "echo": True, "stop": " B"})
    ).json()
    assert data["choices"][0]["text"] == "Q: A" and data["choices"][0]["finish_reason"] == "stop"


def test_completion_logprobs_legacy_shape(fake_server) -> None:
    app, _ = fake_server(["ab", "c"])
    data = run(post(app, "/v1/completions", {"model": "fake", "prompt": "x", "logprobs": 1})).json()
    assert data["choices"][0]["logprobs"] == {
        "tokens": ["ab", "c"],
        "token_logprobs": [0.0, 0.0],
        "top_logprobs": [{"ab": 0.0}, {"c": 0.0}],
        "text_offset": [0, 2],
    }


def test_completion_stream_shape(fake_server) -> None:
    app, _ = fake_server(["a", "b"])
    resp = run(
        post(
            app,
            "/v1/completions",
            {
                "model": "fake",
                "prompt": "x",
                "stream": True,
                "n": 2,
                "stream_options": {"include_usage": True},
            },
        )
    )
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    texts = {0: "", 1: ""}
    finishes = {}
    for e in events[:-2]:
        assert e["object"] == "text_completion" and e["usage"] is None
        (c,) = e["choices"]
        texts[c["index"]] += c["text"]
        if c.get("finish_reason"):
            finishes[c["index"]] = c["finish_reason"]
    assert texts == {0: "ab", 1: "ab"} and finishes == {0: "stop", 1: "stop"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "logprobs"),
        ({"prompt": "x", "logprobs": 9}, "logprobs"),
        ({}, "prompt"),
    ],
)
def test_completion_refusals_name_the_param(fake_server, extra, param) -> None:
    app, _ = fake_server()
    resp = run(post(app, "/v1/completions", {"model": "fake", **extra}))
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def test_completion_json_object_sets_a_grammar(fake_server) -> None:
    app, models = fake_server(['{"a": 1}'])
    resp = run(
        post(
            app,
            "/v1/completions",
            {"model": "fake", "prompt": "x", "response_format": {"type": "json_object"}},
        )
    )
    assert resp.status_code == 200 and models.engines["fake:latest"].requests[0].grammar


def test_embeddings_float_and_base64(fake_server) -> None:
    app, models = fake_server()
    data = run(post(app, "/v1/embeddings", {"model": "fake", "input": ["hello", "world"]})).json()
    assert data["object"] == "list" and data["model"] == "fake:latest"
    assert [d["index"] for d in data["data"]] == [0, 1] and all(
        d["object"] == "embedding" for d in data["data"]
    )
    vec = data["data"][0]["embedding"]
    assert len(vec) == 32 and math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-6)
    engine = models.engines["fake:latest"]
    expected_tokens = sum(len(engine.tokenize(t, add_special=True)) for t in ("hello", "world"))
    assert data["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}

    b64 = run(
        post(app, "/v1/embeddings", {"model": "fake", "input": "hello", "encoding_format": "base64"})
    ).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, vec, strict=True))


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": [1, 2, 3]}, "input"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": "x", "dimensions": 7}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_embedding_refusals(fake_server, payload, param) -> None:
    app, _ = fake_server()
    resp = run(post(app, "/v1/embeddings", {"model": "fake", **payload}))
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
