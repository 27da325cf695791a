"""Every error a client can meet comes back as OpenAI's envelope with the right status, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kaiyuan.errors import LicenseDenied
from tests.server._support import client, get, post, run


def body(**kw):
    return {"model": "fake", "messages": [{"role": "user", "content": "Hi"}], **kw}


def error_of(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    return data["error"]


def test_unknown_model_is_404_with_suggestions(fake_server) -> None:
    app, _ = fake_server()
    err = error_of(run(post(app, "/v1/chat/completions", {**body(), "model": "nope"})), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "fake:latest" in err["message"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "fake"}, "messages"),
        ({"model": "fake", "messages": []}, "messages"),
        (body(temperature=5), "temperature"),
        (body(top_p=-1), "top_p"),
        (body(n=0), "n"),
        (body(max_tokens=0), "max_tokens"),
        (body(top_logprobs=50, logprobs=True), "top_logprobs"),
        (body(presence_penalty=3), "presence_penalty"),
        (body(stream="yes please"), "stream"),
        (body(stop=[1, 2]), "stop"),
        (body(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name"),
        (body(tool_choice="sometimes"), "tool_choice"),
        (body(response_format={"type": "xml"}), "response_format.type"),
        ({"model": "fake", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"model": "fake", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "fake", "messages": "hello"}, "messages"),
    ],
)
def test_invalid_values_are_400_naming_the_param(fake_server, payload, param) -> None:
    app, _ = fake_server()
    err = error_of(run(post(app, "/v1/chat/completions", payload)), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err


@pytest.mark.parametrize(
    ("payload", "param", "words"),
    [
        (body(top_logprobs=2), "top_logprobs", "logprobs"),
        (body(logit_bias={"abc": 1}), "logit_bias", "token ids"),
        (body(logit_bias={"5": 500}), "logit_bias", "-100..100"),
        (body(functions=[{"name": "f"}]), "functions", "tools"),
        (body(tool_choice="required"), "tool_choice", "tool"),
        (
            body(
                tools=[{"type": "function", "function": {"name": "a"}}],
                tool_choice={"type": "function", "function": {"name": "b"}},
            ),
            "tool_choice",
            "'b'",
        ),
        (body(stop=[str(i) for i in range(20)]), "stop", "16"),
        (body(modalities=["text", "audio"]), "modalities", "text"),
    ],
)
def test_semantic_errors_are_400_naming_the_param(fake_server, payload, param, words) -> None:
    app, _ = fake_server()
    err = error_of(run(post(app, "/v1/chat/completions", payload)), 400)
    assert err["param"] == param and words in err["message"]


def test_image_part_is_refused_as_no_vision(fake_server) -> None:
    app, _ = fake_server()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:,x"}},
    ]
    payload = {"model": "fake", "messages": [{"role": "user", "content": content}]}
    err = error_of(run(post(app, "/v1/chat/completions", payload)), 400)
    assert (
        "vision" in err["message"]
        and err["param"] == "messages[0].content[1]"
        and err["code"] == "unsupported"
    )


def test_body_that_is_not_json_is_400(fake_server) -> None:
    app, _ = fake_server()
    err = error_of(
        run(post(app, "/v1/chat/completions", b"{not json", headers={"content-type": "application/json"})),
        400,
    )
    assert "JSON" in err["message"] and err["param"] is None
    error_of(
        run(post(app, "/v1/chat/completions", b"[1, 2]", headers={"content-type": "application/json"})), 400
    )


def test_prompt_longer_than_context_is_400_with_counts(fake_server) -> None:
    app, _ = fake_server(n_ctx=64)
    err = error_of(
        run(post(app, "/v1/chat/completions", body(messages=[{"role": "user", "content": "x" * 500}]))), 400
    )
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "64" in err["message"] and "tokens" in err["message"]


def test_full_queue_is_503_with_retry_after(fake_server) -> None:
    app, _ = fake_server(["t"] * 200, slots=1, max_queue=0, delay=0.005)

    async def scenario():
        async with client(app) as c:
            first = asyncio.create_task(c.post("/v1/chat/completions", json=body()))
            await asyncio.sleep(0.1)
            second = await c.post("/v1/chat/completions", json=body())
            return await first, second

    first, second = run(scenario())
    assert first.status_code == 200
    err = error_of(second, 503)
    assert err["code"] == "overloaded" and int(second.headers["retry-after"]) >= 1


def test_api_key_is_required_on_the_api_but_not_health(fake_server) -> None:
    app, _ = fake_server(settings={"api_key": "s3cret"})
    err = error_of(run(post(app, "/v1/chat/completions", body())), 401)
    assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    wrong = run(post(app, "/v1/chat/completions", body(), headers={"Authorization": "Bearer nope"}))
    assert error_of(wrong, 401) and wrong.headers["www-authenticate"] == "Bearer"
    ok = run(post(app, "/v1/chat/completions", body(), headers={"Authorization": "Bearer s3cret"}))
    assert ok.status_code == 200
    assert run(get(app, "/health")).status_code == 200
    assert run(get(app, "/metrics")).status_code == 200
    error_of(run(get(app, "/v1/models")), 401)
    error_of(run(get(app, "/kaiyuan/ps")), 401)
    # the bad body is not even parsed without the key
    error_of(run(post(app, "/v1/chat/completions", b"garbage")), 401)


def test_license_denied_is_403_with_reasons(fake_server) -> None:
    app, models = fake_server()

    def deny(name: str):
        raise LicenseDenied("license policy forbids serve of fake", reasons=["commercial use is not allowed"])

    models.load = deny  # type: ignore[method-assign]
    app.state.runtime.models._loader = deny
    err = error_of(run(post(app, "/v1/chat/completions", body())), 403)
    assert err["type"] == "permission_error" and err["code"] == "license_denied"
    assert "commercial use is not allowed" in err["message"]


def test_unknown_route_and_wrong_method_use_the_envelope(fake_server) -> None:
    app, _ = fake_server()
    assert error_of(run(get(app, "/v1/nothing")), 404)["code"] == "404"
    assert error_of(run(get(app, "/v1/chat/completions")), 405)["code"] == "405"


def test_unknown_fields_are_accepted_and_logged_once(fake_server, caplog) -> None:
    app, _ = fake_server()
    with caplog.at_level(logging.WARNING, logger="kaiyuan.protocol.openai"):
        for _ in range(2):
            resp = run(post(app, "/v1/chat/completions", body(kaiyuan_test_unknown_field=1)))
            assert resp.status_code == 200
    hits = [r for r in caplog.records if "kaiyuan_test_unknown_field" in r.getMessage()]
    assert len(hits) == 1


def test_ignored_openai_fields_do_not_fail_and_are_logged_once(fake_server, caplog, monkeypatch) -> None:
    from kaiyuan.protocol import convert_openai as convert

    monkeypatch.setattr(convert, "_logged_ignored", set())
    app, _ = fake_server()
    extras = dict(
        store=True,
        metadata={"a": "b"},
        service_tier="auto",
        prompt_cache_key="k",
        safety_identifier="s",
        verbosity="low",
        modalities=["text"],
        stream_options={"include_obfuscation": False},
    )
    with caplog.at_level(logging.INFO, logger="kaiyuan.protocol.convert_openai"):
        for _ in range(2):
            assert run(post(app, "/v1/chat/completions", body(**extras))).status_code == 200
    for name in ("metadata", "service_tier", "verbosity"):
        logged = [r for r in caplog.records if repr(name) in r.getMessage()]
        assert len(logged) == 1
