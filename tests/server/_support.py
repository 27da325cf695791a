"""Helpers for in-process server tests: an app over FakeEngine-backed models, driven through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from kaiyuan.chat import ChatModel, ChatTemplate
from kaiyuan.config import load_settings
from kaiyuan.errors import ModelNotFound
from kaiyuan.server import ModelManager, Runtime, create_app
from kaiyuan.store import ModelStore
from kaiyuan.testing import FakeEngine
from tests.fixtures.tiny_gguf import template_text

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def sse_events(body: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded (``[DONE]`` kept as the string)."""
    events: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


@dataclass
class FakeModels:
    """Model names → (script, template fixture name, FakeEngine options); engines are created on load."""

    specs: dict[str, tuple[Any, str | None, dict[str, Any]]]
    engines: dict[str, FakeEngine] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)

    def resolve(self, name: str) -> str:
        full = name if ":" in name else f"{name}:latest"
        if full not in self.specs:
            raise ModelNotFound(f"model {name!r} not found", suggestions=sorted(self.specs))
        return full

    def load(self, name: str) -> ChatModel:
        script, template, options = self.specs[name]
        options = dict(options)
        default_options = options.pop(
            "default_options", {}
        )  # the model's Ollama params, not an engine option
        engine = FakeEngine(script, **options)
        self.engines[name] = engine
        self.loads.append(name)
        source = template_text(template) if template else None
        template_ = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
        return ChatModel(name, engine, template_, default_options=default_options)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., tuple[Any, FakeModels]]]:
    """``fake_server(script, template=..., settings=..., max_loaded=..., **engine_options)`` → (app, models).

    ``script`` may also be a dict of several models: {"name:tag": (script, template, options)}.
    """
    made: list[Runtime] = []

    def factory(
        script: Any = ("Hello", ",", " world", "!"),
        *,
        template: str | None = "Qwen-Qwen2.5-7B-Instruct",
        settings: dict[str, Any] | None = None,
        max_loaded: int = 1,
        **options: Any,
    ) -> tuple[Any, FakeModels]:
        if isinstance(script, dict):
            specs = script
        else:
            specs = {"fake:latest": (list(script) if not callable(script) else script, template, options)}
        models = FakeModels(specs)
        manager = ModelManager(loader=models.load, resolve=models.resolve, max_loaded=max_loaded)
        resolved = load_settings(**(settings or {}))
        runtime = Runtime(settings=resolved, models=manager, store=ModelStore.from_settings(resolved))
        made.append(runtime)
        return create_app(runtime), models

    yield factory
    for runtime in made:
        runtime.close()


@pytest.fixture
def store_server() -> Iterator[Callable[..., tuple[Any, list[FakeEngine]]]]:
    """``store_server(script, settings=..., **engine_options)`` → (app, engines): the production runtime (the real
    store in KAIYUAN_HOME with the bundled SmolLM2, its real chat template and license) with FakeEngine in place
    of llama.cpp."""
    made: list[Runtime] = []

    def factory(
        script: Any = ("Hello", "!"), *, settings: dict[str, Any] | None = None, **options: Any
    ) -> tuple[Any, list[FakeEngine]]:
        engines: list[FakeEngine] = []

        def engine_factory(manifest: Any, resolved: Any) -> FakeEngine:
            engine = FakeEngine(
                list(script) if not callable(script) else script,
                model_path=str(manifest.model_path),
                **options,
            )
            engines.append(engine)
            return engine

        runtime = Runtime.from_settings(load_settings(**(settings or {})), engine_factory=engine_factory)
        made.append(runtime)
        return create_app(runtime), engines

    yield factory
    for runtime in made:
        runtime.close()


def client(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30, **kw)


async def post(app: Any, path: str, body: Any, **kw: Any) -> httpx.Response:
    async with client(app) as c:
        if isinstance(body, (bytes, str)):
            return await c.post(path, content=body, **kw)
        return await c.post(path, json=body, **kw)


async def get(app: Any, path: str, **kw: Any) -> httpx.Response:
    async with client(app) as c:
        return await c.get(path, **kw)


async def stream_then_disconnect(app: Any, path: str, payload: Any, *, after_chunks: int) -> list[bytes]:
    """Drive ``app`` as a raw ASGI server would: send ``payload``, read ``after_chunks`` body messages of the
    streamed response, then report that the client went away. Returns the body messages received.
    (httpx's ASGITransport buffers whole responses, so it cannot show a disconnect.)"""
    body = json.dumps(payload).encode()
    gone = asyncio.Event()
    sent_request = False
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            if after_chunks == 0:
                gone.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if len(received) >= after_chunks:
                gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=20)
    return received
