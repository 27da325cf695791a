"""/v1/models over the real store (bundled SmolLM2, its license), /health, /metrics, /kaiyuan/ps, loading on first
use and least-recently-used unloading, the web UI mount and /openapi.json."""

from __future__ import annotations

import re

import pytest

from kaiyuan.engine import GenerationRequest
from kaiyuan.errors import EngineError
from tests.server._support import get, post, run, sse_events


def chat(model: str, **kw):
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **kw}


def test_models_lists_the_bundled_model_with_its_license(store_server) -> None:
    app, _ = store_server()
    data = run(get(app, "/v1/models")).json()
    assert data["object"] == "list"
    entry, *aliases = data["data"]
    # every name the server answers to is listed (OpenAI clients look for the id they use); aliases say whose
    assert [(a["id"], a["alias_of"]) for a in aliases] == [
        ("smollm2:latest", "smollm2:135m"),
        ("smollm2", "smollm2:135m"),
    ]
    assert all(a["license"] == entry["license"] and a["created"] == entry["created"] for a in aliases)
    assert entry["id"] == "smollm2:135m" and entry["object"] == "model" and entry["owned_by"] == "kaiyuan"
    assert "alias_of" not in entry
    assert isinstance(entry["created"], int) and entry["loaded"] is False
    assert entry["license"]["id"] == "apache-2.0" and entry["license"]["commercial_use"] == "allowed"
    assert entry["context_length"] == 8192


def test_model_by_alias_and_unknown_model(store_server) -> None:
    app, _ = store_server()
    entry = run(get(app, "/v1/models/smollm2")).json()
    assert entry["id"] == "smollm2" and entry["alias_of"] == "smollm2:135m"
    assert entry["license"]["spdx"] == "Apache-2.0"
    assert "alias_of" not in run(get(app, "/v1/models/smollm2:135m")).json()
    resp = run(get(app, "/v1/models/smollm3"))
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model_id"


def test_chat_through_the_store_uses_the_real_template_and_loads_once(store_server) -> None:
    app, engines = store_server(["Bonjour"])
    for _ in range(2):
        data = run(post(app, "/v1/chat/completions", chat("smollm2"))).json()
        assert data["model"] == "smollm2:135m" and data["choices"][0]["message"]["content"] == "Bonjour"
    assert len(engines) == 1
    prompt = engines[0].detokenize(engines[0].requests[0].prompt)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert run(get(app, "/v1/models")).json()["data"][0]["loaded"] is True


def test_per_model_reasoning_budget_setting_reaches_the_model(store_server, kaiyuan_home) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[models."smollm2:135m"]\nmax_reasoning_tokens = 64\n')
    app, _ = store_server()
    run(post(app, "/v1/chat/completions", chat("smollm2")))
    (loaded,) = app.state.runtime.models.loaded()
    assert loaded.model.max_reasoning_tokens == 64


def test_license_policy_can_forbid_serving(store_server, kaiyuan_home) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["apache-2.0"]\n')
    app, engines = store_server()
    resp = run(post(app, "/v1/chat/completions", chat("smollm2")))
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "license_denied" and engines == []


def test_health_is_open_and_reports_loaded_models(fake_server) -> None:
    app, _ = fake_server(settings={"api_key": "k"})
    data = run(get(app, "/health")).json()
    assert data["status"] == "ok" and data["models_loaded"] == 0 and data["version"]


def test_ps_lists_loaded_models(fake_server) -> None:
    app, _ = fake_server()
    assert run(get(app, "/kaiyuan/ps")).json() == {"models": []}
    run(post(app, "/v1/chat/completions", chat("fake")))
    (entry,) = run(get(app, "/kaiyuan/ps")).json()["models"]
    assert entry["name"] == "fake:latest" and entry["slots"] == 4 and entry["running"] == 0
    assert entry["context_length"] == 4096 and entry["active_requests"] == 0


def test_least_recently_used_model_is_unloaded_beyond_max_loaded(fake_server) -> None:
    specs = {name: (["ok"], "Qwen-Qwen2.5-7B-Instruct", {}) for name in ("a:1", "b:1", "c:1")}
    app, models = fake_server(specs, max_loaded=2)
    for name in ("a:1", "b:1", "a:1", "c:1"):
        assert run(post(app, "/v1/chat/completions", chat(name))).status_code == 200
    names = [e["name"] for e in run(get(app, "/kaiyuan/ps")).json()["models"]]
    assert sorted(names) == ["a:1", "c:1"]  # b was least recently used
    assert models.loads == ["a:1", "b:1", "c:1"]
    # b's engine was closed: a request to it now would fail, so the manager must load it again
    assert run(post(app, "/v1/chat/completions", chat("b:1"))).status_code == 200
    assert models.loads[-1] == "b:1"


def test_adapter_models_share_their_base_engine_and_count_once(
    store_server, kaiyuan_home, tmp_path, tiny_gguf_factory
) -> None:
    from kaiyuan.license import derivative
    from kaiyuan.store import ModelStore
    from tests.fixtures.lora_gguf import random_lora
    from tests.fixtures.tiny_gguf import smollm2_path

    store = ModelStore(kaiyuan_home)
    record = derivative("tuned", [store.resolve("smollm2").parent_ref()], "adapter")
    lora = random_lora(smollm2_path(), tmp_path / "lora.gguf")
    store.add_adapter_model("tuned", "smollm2", lora, lineage=record["lineage"], license=record["license"])
    store.import_gguf(tiny_gguf_factory(license={"id": "mit"}), "other")
    app, engines = store_server(settings={"max_loaded": 1})

    for name in ("smollm2", "tuned"):
        assert run(post(app, "/v1/chat/completions", chat(name))).status_code == 200
    assert len(engines) == 1  # the adapter model runs on the base's engine ...
    assert [r.adapters for r in engines[0].requests] == [(), (str(lora_file(store, "tuned")),)]
    names = sorted(e["name"] for e in run(get(app, "/kaiyuan/ps")).json()["models"])
    assert names == ["smollm2:135m", "tuned:latest"]  # ... so both fit in --max-loaded 1

    assert run(post(app, "/v1/chat/completions", chat("other"))).status_code == 200
    assert [e["name"] for e in run(get(app, "/kaiyuan/ps")).json()["models"]] == ["other:latest"]
    with pytest.raises(EngineError, match="closed"):  # base and adapter unloaded together, engine closed
        engines[0].submit(GenerationRequest(prompt=[1]))


def lora_file(store, name: str):
    (path,) = store.resolve(name).adapter_paths
    return path


def test_a_model_in_use_is_not_closed_under_its_request(fake_server) -> None:
    specs = {
        "slow:1": (["t"] * 40, None, {"delay": 0.01}),
        "other:1": (["ok"], None, {}),
    }
    app, _ = fake_server(specs, max_loaded=1)

    async def scenario():
        import asyncio

        from tests.server._support import client

        async with client(app) as c:
            slow = asyncio.create_task(c.post("/v1/chat/completions", json=chat("slow:1", stream=True)))
            await asyncio.sleep(0.1)
            other = await c.post("/v1/chat/completions", json=chat("other:1"))
            return await slow, other

    slow, other = run(scenario())
    assert other.status_code == 200
    events = sse_events(slow.text)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "t" * 40


def test_metrics_exposes_kaiyuan_series(fake_server) -> None:
    app, _ = fake_server(["a", "b", "c"])
    run(post(app, "/v1/chat/completions", chat("fake")))
    run(post(app, "/v1/chat/completions", chat("fake", stream=True)))
    resp = run(get(app, "/metrics"))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for name in (
        "kaiyuan_requests_running",
        "kaiyuan_requests_waiting",
        "kaiyuan_kv_cache_usage_ratio",
        "kaiyuan_prefix_cache_hits_total",
        "kaiyuan_time_to_first_token_seconds_count",
        "kaiyuan_inter_token_latency_seconds_count",
        "kaiyuan_request_duration_seconds_count",
    ):
        assert name in text, name
    assert re.search(r'kaiyuan_generation_tokens_total\{model="fake:latest"\} 6\.0', text)
    assert re.search(r'kaiyuan_time_to_first_token_seconds_count\{model="fake:latest"\} 2\.0', text)
    assert re.search(r'kaiyuan_inter_token_latency_seconds_count\{model="fake:latest"\} 4\.0', text)
    assert re.search(r'kaiyuan_prefix_cache_hits_total\{model="fake:latest"\} 1\.0', text)
    assert re.search(r'kaiyuan_requests_total\{endpoint="/v1/chat/completions",status="200"\} 2\.0', text)
    assert "kaiyuan_models_loaded 1.0" in text


def test_openapi_lists_the_api(fake_server) -> None:
    app, _ = fake_server()
    spec = run(get(app, "/openapi.json")).json()
    for path in (
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path
    chat_schema = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "kaiyuan" not in chat_schema["temperature"].get("description", "")
    assert chat_schema["chat_template_kwargs"]["description"]
    responses = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "429", "503"} <= set(responses)


def test_web_ui_is_served_at_root_without_shadowing_the_api(fake_server) -> None:
    from kaiyuan.server import _app

    app, _ = fake_server()
    root = run(get(app, "/"))
    if (_app.STATIC_DIR / "index.html").is_file():
        assert root.status_code == 200 and "text/html" in root.headers["content-type"]
    assert run(get(app, "/v1/chat/completions")).status_code == 405


def test_cors_is_off_unless_configured(fake_server) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    app, _ = fake_server()
    resp = run(get(app, "/v1/models", headers={"Origin": "http://app.example"}))
    assert "access-control-allow-origin" not in resp.headers
    app, _ = fake_server(settings={"cors_origins": "http://app.example"})

    async def options():
        from tests.server._support import client

        async with client(app) as c:
            return await c.options("/v1/chat/completions", headers=preflight)

    resp = run(options())
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "http://app.example"


def test_unload_now_or_after_the_last_request(fake_server) -> None:
    app, models = fake_server()
    manager = app.state.runtime.models
    assert run(manager.unload("fake:latest")) is False  # not loaded
    run(post(app, "/v1/chat/completions", chat("fake")))
    engine = models.engines["fake:latest"]
    assert run(manager.unload("fake:latest")) is True
    assert manager.loaded() == []
    with pytest.raises(EngineError, match="closed"):
        engine.submit(GenerationRequest(prompt=[1]))
