"""Request preparation (template, tokenizer, grammar) over real HTTP: a real ``kaiyuan serve`` process on the
bundled SmolLM2 with one slot and a queue of one, so a leaked slot shows as the next request being refused.

Recursive JSON Schemas are answered with complete, valid JSON within ``max_tokens``; a schema nested deeper than
the compiler goes and text that is not Unicode are a 400 naming what to change. Every such error keeps the
keep-alive connection open (the next request goes over the same socket) on both skins, OpenAI and Ollama.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.chat.grammars.test_recursive_schemas import JSON_VALUE, LINKED_LIST, REACT_ELEMENT
from tests.server.test_openai_sdk_integration import Server, free_port, start_server

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Write a small example as JSON."}]


def _long_chain(n: int) -> dict[str, Any]:
    """A chain of ``n`` definitions, each an array of the next: shallow JSON, deep to compile."""
    defs: dict[str, Any] = {
        f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}} for i in range(n)
    }
    defs[f"d{n}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("prep-home"), "--parallel", "1", "--max-queue", "1")


class Connection:
    """One keep-alive HTTP connection; ``post`` fails the test if the server closed the previous one."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.socket: Any = None

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        if self.socket is None:
            self.socket = self.conn.sock
        assert self.conn.sock is self.socket, "the server closed the keep-alive connection"
        response = self.conn.getresponse()
        payload = response.read()
        assert response.getheader("connection", "").lower() != "close"
        return response.status, json.loads(payload)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def conn(server: Server) -> Iterator[Connection]:
    c = Connection(server.url)
    yield c
    c.close()


def _openai_schema(schema: Any, max_tokens: int = 200) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": ASK,
        "max_tokens": max_tokens,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


def _ollama_schema(schema: Any, num_predict: int = 200) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": ASK,
        "stream": False,
        "format": schema,
        "options": {"num_predict": num_predict, "temperature": 0},
    }


@pytest.mark.parametrize("schema", [JSON_VALUE, LINKED_LIST, REACT_ELEMENT], ids=["json", "list", "react"])
def test_recursive_schemas_answer_complete_json_within_max_tokens(conn: Connection, schema: Any) -> None:
    status, body = conn.post("/v1/chat/completions", _openai_schema(schema, 120))
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    assert body["usage"]["completion_tokens"] <= 120

    status, body = conn.post("/api/chat", _ollama_schema(schema, 120))
    assert status == 200, body
    assert body["done_reason"] == "stop", body
    jsonschema.validate(json.loads(body["message"]["content"]), schema)


def test_preparation_errors_are_400s_that_keep_the_connection(conn: Connection) -> None:
    deep = _long_chain(400)
    status, body = conn.post("/v1/chat/completions", _openai_schema(deep))
    assert status == 400, body
    assert body["error"]["param"] == "response_format" and "'$ref'" in body["error"]["message"]
    assert "nests deeper" in body["error"]["message"]

    status, body = conn.post("/api/chat", _ollama_schema(deep))
    assert status == 400 and "nests deeper" in body["error"], body

    # A lone surrogate is valid JSON but no text a tokenizer can take.
    lone = b'{"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    status, body = conn.post("/v1/chat/completions", lone)
    assert status == 400 and "Unicode" in body["error"]["message"], body
    lone_ollama = (
        b'{"model": "smollm2", "stream": false, "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    )
    status, body = conn.post("/api/chat", lone_ollama)
    assert status == 400 and "Unicode" in body["error"], body

    # The same connection, and the one slot, still serve.
    status, body = conn.post(
        "/v1/chat/completions", {"model": "smollm2", "messages": ASK, "max_tokens": 4, "temperature": 0}
    )
    assert status == 200 and body["choices"][0]["message"]["content"], body
    status, body = conn.post(
        "/api/chat",
        {"model": "smollm2", "messages": ASK, "stream": False, "options": {"num_predict": 4}},
    )
    assert status == 200 and body["message"]["content"], body


# -- anything else that fails while preparing: a clean 500 on a kept connection -----------------------------------

# A chat template (untrusted, from the model file) that recurses until Python gives up: not one of the errors the
# template sandbox expects, so it reaches the pipeline's last line of defence.
RECURSING_TEMPLATE = "{% macro deeper(n) %}{{ deeper(n + 1) }}{% endmacro %}{{ deeper(0) }}"


@pytest.fixture(scope="module")
def broken_server() -> Iterator[str]:
    """The real app and a real uvicorn on a socket, serving a FakeEngine model whose template recurses."""
    import threading

    import uvicorn

    from kaiyuan.chat import ChatModel, ChatTemplate
    from kaiyuan.config import load_settings
    from kaiyuan.server import ModelManager, Runtime, create_app
    from kaiyuan.store import ModelStore
    from kaiyuan.testing import FakeEngine

    def load(name: str) -> ChatModel:
        return ChatModel(name, FakeEngine(["ok"], slots=1, max_queue=0), ChatTemplate(RECURSING_TEMPLATE))

    settings = load_settings()
    manager = ModelManager(loader=load, resolve=lambda name: "broken:latest", max_loaded=1)
    runtime = Runtime(settings=settings, models=manager, store=ModelStore.from_settings(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    runtime.close()


def test_unexpected_preparation_errors_are_clean_500s_on_a_kept_connection(broken_server: str) -> None:
    conn = Connection(broken_server)
    try:
        for _ in range(3):  # the one slot (max_queue 0) would refuse the next request had one leaked
            status, body = conn.post(
                "/v1/chat/completions", {"model": "broken", "messages": ASK, "max_tokens": 4}
            )
            assert status == 500, body
            assert body["error"]["type"] == "server_error" and "RecursionError" in body["error"]["message"]
            status, body = conn.post("/api/chat", {"model": "broken", "messages": ASK, "stream": False})
            assert status == 500 and "RecursionError" in body["error"], body
    finally:
        conn.close()


# -- forced tool calls within a small max_tokens (issue 14, item 4) -------------------------------------------------

GET_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "function": {"name": "get_weather"}}, "required"],
    ids=["named", "required"],
)
def test_forced_tool_call_fits_32_tokens(server: Server, choice: Any) -> None:
    # What LangChain's ChatOpenAI(max_tokens=32).bind_tools([get_weather], tool_choice="get_weather") sends.
    response = server.client().chat.completions.create(
        model="smollm2",
        messages=WEATHER_QUESTION,  # type: ignore[arg-type]
        tools=[GET_WEATHER],  # type: ignore[list-item]
        tool_choice=choice,
        max_tokens=32,
        temperature=0,
    )
    choice_ = response.choices[0]
    assert choice_.finish_reason == "tool_calls", choice_
    calls = choice_.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, GET_WEATHER["function"]["parameters"])  # type: ignore[index]
    assert arguments["location"]
    assert response.usage is not None and response.usage.completion_tokens <= 32


def test_tool_call_budget_is_refused_only_below_the_fewest_tokens(conn: Connection) -> None:
    """The refusal names a lower bound on the tokens of a complete call; at that many tokens the request is
    served (best effort: the grammar cannot promise that the model takes the shortest way, so it may end at
    max_tokens), one token fewer is refused."""

    def ask(max_tokens: int) -> tuple[int, Any]:
        return conn.post(
            "/v1/chat/completions",
            {
                "model": "smollm2",
                "messages": WEATHER_QUESTION,
                "tools": [GET_WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )

    status, body = ask(4)
    assert status == 400 and body["error"]["param"] == "max_tokens", body
    fewest = int(body["error"]["message"].split("takes at least ")[1].split(";")[0])
    # The shortest call this format allows, in the model's own tokens, is never below the bound.
    status, body = ask(fewest - 1)
    assert status == 400, body
    status, body = ask(fewest)
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather", choice
    assert (
        fewest < 32
    )  # the budget: "the shortest needs 50" when every token was counted as one character


# -- response_format within a small max_tokens, counted in the model's tokens (issue 14) -----------------------------

ORDER = {
    "type": "object",
    "properties": {
        "customer_name": {"type": "string"},
        "shipping_address": {"type": "string"},
        "order_status": {"enum": ["pending", "shipped", "delivered"]},
        "is_gift_wrapped": {"type": "boolean"},
    },
    "required": ["customer_name", "shipping_address", "order_status", "is_gift_wrapped"],
    "additionalProperties": False,
}
ORDER_ASK = [{"role": "user", "content": "Make up an order as JSON."}]


def test_json_schema_budget_counts_the_models_tokens(conn: Connection) -> None:
    """ORDER's smallest document is 90 characters but 36 SmolLM2 tokens. Counted in characters, 38 tokens cut
    the JSON off and up to 90 left the strings empty; counted in tokens, the JSON closes and the strings fill."""
    for max_tokens in (38, 60):
        body: dict[str, Any] = {**_openai_schema(ORDER, max_tokens), "messages": ORDER_ASK}
        status, answer = conn.post("/v1/chat/completions", body)
        assert status == 200, answer
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        order = json.loads(choice["message"]["content"])
        jsonschema.validate(order, ORDER)
        assert answer["usage"]["completion_tokens"] <= max_tokens
        if max_tokens == 60:
            assert order["customer_name"] and order["shipping_address"], order

        status, answer = conn.post("/api/chat", {**_ollama_schema(ORDER, max_tokens), "messages": ORDER_ASK})
        assert status == 200, answer
        assert answer["done_reason"] == "stop", answer
        jsonschema.validate(json.loads(answer["message"]["content"]), ORDER)
        assert answer["eval_count"] <= max_tokens
