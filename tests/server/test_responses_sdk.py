"""A real ``kaiyuan serve`` process (llama.cpp, 1 thread) driven by the official ``openai`` SDK's Responses API:
``responses.create`` (text, json_schema, function tools, reasoning on an R1-template model), the strict
``responses.stream()`` helper to ``get_final_response()``, ``previous_response_id`` across a server restart,
``background`` + cancel, and 4xx for hostile input."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.server.test_anthropic_sdk import R1, import_r1_tiny
from tests.server.test_openai_sdk_integration import Server, start_server

pytestmark = pytest.mark.slow

MODEL = "smollm2"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_gguf_factory: Callable[..., Path]) -> Path:
    home = tmp_path_factory.mktemp("responses-home")
    import_r1_tiny(home, tiny_gguf_factory)
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    yield from start_server(home, "--parallel", "2", "--max-loaded", "2")


def test_create_and_stream_helper_agree(server: Server) -> None:
    client = server.client()
    # room to finish: the helper's get_final_response() needs response.completed (an incomplete response ends
    # with response.incomplete, as on OpenAI)
    whole = client.responses.create(
        model=MODEL, input="Name three colours.", temperature=0, max_output_tokens=300
    )
    assert whole.status == "completed" and whole.output_text
    assert whole.usage is not None and whole.usage.output_tokens > 0
    with client.responses.stream(
        model=MODEL, input="Name three colours.", temperature=0, max_output_tokens=300
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.status == whole.status
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens > 0  # same prompt again


def test_json_schema_answer_is_valid(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    resp = server.client().responses.create(
        model=MODEL,
        input="Give a city and its population as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        max_output_tokens=96,
        temperature=0,
    )
    data = json.loads(resp.output_text)
    assert set(data) == {"city", "population"} and isinstance(data["population"], int)


def test_function_tool_round_trip_with_previous_response_id(server: Server) -> None:
    client = server.client()
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=128,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    # SmolLM2's template cannot show tools: it reads them in a system message, so it fills in the right city
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    with client.responses.stream(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 25C"}],
        tools=[WEATHER],
        max_output_tokens=32,
        temperature=0,
    ) as stream:
        final = stream.get_final_response()
    assert final.previous_response_id == first.id and final.status in ("completed", "incomplete")
    assert final.output
    items = client.responses.input_items.list(final.id)
    assert [item.type for item in items.data] == ["function_call_output"]


def test_reasoning_items_with_r1_template(server: Server) -> None:
    client = server.client()
    resp = client.responses.create(
        model=R1, input="Hi", reasoning={"effort": "minimal"}, max_output_tokens=200
    )
    assert resp.output[0].type == "reasoning"
    assert resp.output[0].content and resp.output[0].content[0].type == "reasoning_text"
    assert resp.usage is not None and resp.usage.output_tokens_details.reasoning_tokens > 0
    # random weights rarely stop on their own: the stream may end with response.incomplete
    with client.responses.stream(
        model=R1, input="Hi", reasoning={"effort": "minimal"}, max_output_tokens=200
    ) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert "response.reasoning_text.delta" in kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert events[-1].response.output[0].type == "reasoning"  # type: ignore[union-attr]


def test_background_and_cancel(server: Server) -> None:
    client = server.client()
    queued = client.responses.create(
        model=MODEL, input="Write a long story about the sea.", background=True, max_output_tokens=900
    )
    assert queued.status in ("queued", "in_progress") and queued.background
    deadline = time.time() + 60
    while client.responses.retrieve(queued.id).status == "queued" and time.time() < deadline:
        time.sleep(0.1)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(queued.id).status == "cancelled"

    done = client.responses.create(model=MODEL, input="Say hi.", background=True, max_output_tokens=8)
    while (polled := client.responses.retrieve(done.id)).status in ("queued", "in_progress"):
        assert time.time() < deadline + 60
        time.sleep(0.1)
    assert polled.status in ("completed", "incomplete") and polled.output_text


def test_hostile_inputs_get_4xx(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_does_not_exist")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"role": "user", "content": "x"}] * 5000)  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"type": "spaceship", "id": "x"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")


def test_previous_response_id_across_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first_server = start_server(home)
    server = next(first_server)
    first = server.client().responses.create(
        model=MODEL, input="My name is Ada. Remember it.", temperature=0, max_output_tokens=16
    )
    first_server.close()  # stops the process

    second_server = start_server(home)
    server = next(second_server)
    try:
        client = server.client()
        assert client.responses.retrieve(first.id).output_text == first.output_text
        second = client.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input="What is my name?",
            temperature=0,
            max_output_tokens=16,
        )
        assert second.status in ("completed", "incomplete") and second.previous_response_id == first.id
        # the model saw the first turn: the prompt is longer than the second question alone
        alone = client.responses.create(
            model=MODEL, input="What is my name?", temperature=0, max_output_tokens=1
        )
        assert second.usage is not None and alone.usage is not None
        assert second.usage.input_tokens > alone.usage.input_tokens + 10
    finally:
        second_server.close()


def test_mcp_tool_loop_on_a_real_server(tmp_path: Path) -> None:
    """SmolLM2 calls get_weather of the test MCP server (stdio) through the server-side loop, and answers."""
    home = tmp_path / "home"
    home.mkdir()
    weather = Path(__file__).parents[1] / "mcp" / "weather_server.py"
    (home / "kaiyuan.toml").write_text(
        f"[mcp.servers.weather]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(weather))}]\n"
    )
    serving = start_server(home)
    server = next(serving)
    try:
        tool = {
            "type": "mcp",
            "server_label": "weather",
            "allowed_tools": ["get_weather"],
            "require_approval": "never",
        }
        resp = server.client().responses.create(
            model=MODEL,
            input="What is the weather in Paris?",
            tools=[tool],  # type: ignore[list-item]
            tool_choice="required",
            temperature=0,
            max_output_tokens=128,
        )
        kinds = [item.type for item in resp.output]
        assert kinds[0] == "mcp_list_tools" and "mcp_call" in kinds and kinds[-1] == "message"
        call = resp.output[kinds.index("mcp_call")]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        assert call.output == "The weather in Paris is sunny, 25C."  # type: ignore[union-attr]
        assert resp.output_text
    finally:
        serving.close()
