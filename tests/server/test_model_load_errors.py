"""A model whose load fails with an exception outside kaiyuan's error tree (a bug, or a backend failing in a way
nobody wrapped) is answered on every skin with an error that names the model, what failed and what to do, not
the anonymous "internal error"; the model already loaded keeps serving, on the same keep-alive connection.

The real app on a real uvicorn socket; the loader is injected (``ModelManager(loader=…)``): the store's own
checks turn every damage we can make to a stored model into a ``StoreError`` or ``InvalidModelFile`` first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from kaiyuan.chat import ChatModel, ChatTemplate
from kaiyuan.config import load_settings
from kaiyuan.errors import ModelNotFound
from kaiyuan.server import ModelManager, Runtime, create_app
from kaiyuan.store import ModelStore
from kaiyuan.testing import FakeEngine
from tests.chat.test_pipeline_http import Connection
from tests.fixtures.tiny_gguf import template_text
from tests.server.test_openai_sdk_integration import free_port

HI = [{"role": "user", "content": "hi"}]
NAMES = {"good": "good:latest", "broken": "broken:latest"}


class _Models:
    def __init__(self) -> None:
        self.loads: list[str] = []

    def resolve(self, name: str) -> str:
        if name.split(":")[0] not in NAMES:
            raise ModelNotFound(f"model {name!r} not found")
        return NAMES[name.split(":")[0]]

    def load(self, name: str) -> ChatModel:
        self.loads.append(name)
        if name == "broken:latest":
            raise KeyError("tokenizer.ggml.tokens")  # what an unwrapped backend bug looks like
        template = ChatTemplate(template_text("Qwen-Qwen2.5-7B-Instruct"))
        return ChatModel(name, FakeEngine(["ok"], slots=1, max_queue=0), template)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, _Models]]:
    models = _Models()
    settings = load_settings()
    manager = ModelManager(loader=models.load, resolve=models.resolve, max_loaded=1)
    runtime = Runtime(settings=settings, models=manager, store=ModelStore.from_settings(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}", models
    server.should_exit = True
    thread.join(10)
    runtime.close()


def _requests(model: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("openai", "/v1/chat/completions", {"model": model, "messages": HI, "max_tokens": 4}),
        ("openai", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 4}),
        ("ollama", "/api/chat", {"model": model, "messages": HI, "stream": False}),
        ("ollama", "/api/generate", {"model": model, "prompt": "hi", "stream": False}),
        ("anthropic", "/v1/messages", {"model": model, "messages": HI, "max_tokens": 4}),
        ("responses", "/v1/responses", {"model": model, "input": "hi", "max_output_tokens": 16}),
    ]


def _message(skin: str, body: Any) -> str:
    if skin == "ollama":
        return str(body["error"])
    return str(body["error"]["message"])


def test_a_failed_load_is_named_on_every_skin_and_the_loaded_model_keeps_serving(
    served: tuple[str, _Models],
) -> None:
    url, models = served
    conn = Connection(url)
    try:
        status, body = conn.post("/v1/chat/completions", {"model": "good", "messages": HI, "max_tokens": 4})
        assert status == 200, body
        for skin, path, request in _requests("broken"):
            status, body = conn.post(path, request)
            assert status == 500, (skin, body)
            message = _message(skin, body)
            assert "could not load model broken:latest" in message, message
            assert "KeyError" in message and "tokenizer.ggml.tokens" in message, message
            assert "kaiyuan show broken:latest" in message and "keep serving" in message, message
            if skin == "openai":
                assert body["error"]["type"] == "server_error" and body["error"]["code"] == "engine_error"
            # The model that was loaded still answers, over the same connection, without being loaded again.
            good = next(r for s, p, r in _requests("good") if (s, p) == (skin, path))
            status, body = conn.post(path, good)
            assert status == 200, (skin, body)
        assert models.loads.count("good:latest") == 1
        assert models.loads.count("broken:latest") == len(_requests("broken"))  # each request tries again
    finally:
        conn.close()


def test_a_failed_load_before_a_stream_is_an_error_response_not_a_broken_stream(
    served: tuple[str, _Models],
) -> None:
    url, _ = served
    conn = Connection(url)
    try:
        status, body = conn.post(
            "/v1/chat/completions", {"model": "broken", "messages": HI, "max_tokens": 4, "stream": True}
        )
        assert status == 500 and "could not load model broken:latest" in body["error"]["message"], body
    finally:
        conn.close()
