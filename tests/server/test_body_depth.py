"""A request body (or tool-call arguments inside it) nested past ``MAX_JSON_DEPTH`` is a 400 in each skin's
envelope, over real HTTP against a real ``kaiyuan serve`` (SmolLM2, one slot, a queue of one): never a 500,
never a dropped keep-alive connection, never a leaked slot. Before the bound, 300 levels of a tool schema gave
pydantic's "Circular reference detected (depth exceeded)" as a 500 that closed the connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kaiyuan.protocol._json_depth import MAX_JSON_DEPTH
from tests.chat.test_pipeline_http import Connection
from tests.server.test_openai_sdk_integration import Server, start_server

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("depth-home"), "--parallel", "1", "--max-queue", "1")


DEEP, ROWS, ARGS = "@deep@", "@rows@", "@args@"
TOOL = {"type": "function", "function": {"name": "f", "parameters": DEEP}}
CALLED = [
    {"role": "user", "content": "hi"},
    {
        "role": "assistant",
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": ARGS}}],
    },
    {"role": "tool", "tool_call_id": "t", "content": "ok"},
]
USED = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": DEEP}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": DEEP}}
FC = [
    {"type": "function_call", "call_id": "c", "name": "f", "arguments": ARGS},
    {"type": "function_call_output", "call_id": "c", "output": "ok"},
]
# (skin, path, body with a placeholder where the deep JSON goes, whether it is valid when shallow enough)
PLACES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("openai", "/v1/chat/completions", {"messages": [{"role": "user", "content": ROWS}], "max_tokens": 4}, False),
    ("openai", "/v1/chat/completions", {"messages": HI, "tools": [TOOL], "max_tokens": 4}, True),
    ("openai", "/v1/chat/completions", {"messages": HI, "response_format": SCHEMA, "max_tokens": 4}, True),
    ("openai", "/v1/chat/completions", {"messages": CALLED, "max_tokens": 4}, True),
    ("openai", "/v1/completions", {"prompt": ROWS, "max_tokens": 4}, False),
    ("ollama", "/api/chat", {"messages": HI, "tools": [TOOL], "stream": False}, True),
    ("ollama", "/api/chat", {"messages": HI, "format": DEEP, "stream": False}, True),
    ("ollama", "/api/generate", {"prompt": "hi", "format": DEEP, "stream": False}, True),
    ("anthropic", "/v1/messages", {"messages": HI, "tools": [{"name": "f", "input_schema": DEEP}], "max_tokens": 4}, True),
    ("anthropic", "/v1/messages", {"messages": USED, "max_tokens": 4}, True),
    ("responses", "/v1/responses", {"input": "hi", "tools": [{**TOOL["function"], "type": "function"}]}, True),
    ("responses", "/v1/responses", {"input": "hi", "text": {"format": {**SCHEMA["json_schema"], "type": "json_schema"}}}, True),
    ("responses", "/v1/responses", {"input": FC}, True),
]  # fmt: skip


def _bodies(depth: int) -> list[tuple[str, str, str, bool]]:
    """(skin, path, body, valid when shallow) for each place a client can put JSON, nested ``depth`` levels
    there (tool-call arguments: a JSON text in a string, parsed only after the body)."""
    deep = '{"a":' * depth + "1" + "}" * depth  # a "schema" with one unknown keyword per level
    rows = "[" * depth + '"x"' + "]" * depth
    out = []
    for skin, path, fields, valid in PLACES:
        extra: dict[str, Any] = {
            "responses": {"max_output_tokens": 16},
            "ollama": {"options": {"num_predict": 4}},
        }.get(skin, {})
        text = json.dumps({"model": "smollm2", **fields, **extra})
        text = text.replace(f'"{DEEP}"', deep).replace(f'"{ROWS}"', rows)
        out.append((skin, path, text.replace(f'"{ARGS}"', json.dumps(deep)), valid))
    return out


def _message(skin: str, body: Any) -> str:
    if skin == "ollama":
        return str(body["error"])
    if skin == "anthropic":
        assert body["type"] == "error"
    return str(body["error"]["message"])


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000, 50_000])
def test_deep_json_is_a_400_on_every_skin_and_keeps_the_connection(server: Server, depth: int) -> None:
    conn = Connection(server.url)
    try:
        for skin, path, body, _ in _bodies(depth):
            status, answer = conn.post(path, body.encode())
            assert status == 400, (skin, path, answer)
            assert f"nested deeper than {MAX_JSON_DEPTH} levels" in _message(skin, answer), answer
        # The same connection, and the one slot, still serve.
        status, answer = conn.post(
            "/v1/chat/completions", {"model": "smollm2", "messages": HI, "max_tokens": 2}
        )
        assert status == 200, answer
    finally:
        conn.close()


def test_just_under_the_bound_is_served(server: Server) -> None:
    """The bound is on the whole body: a tool schema 120 levels deep sits at about 125."""
    conn = Connection(server.url)
    try:
        for skin, path, body, valid in _bodies(MAX_JSON_DEPTH - 8):
            if not valid:
                continue  # content and prompt as nested arrays are invalid at any depth
            status, answer = conn.post(path, body.encode())
            assert status in (200, 400), (skin, path, answer)
            if status == 400:  # only what the model's budget refuses, never the nesting
                assert "nested deeper" not in _message(skin, answer), answer
    finally:
        conn.close()
