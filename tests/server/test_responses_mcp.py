"""The Responses API's server-side MCP loop, in process (FakeEngine as the model, a real MCP server written with
the ``mcp`` SDK in tests/mcp/weather_server.py, over stdio and over Streamable HTTP): tools listed, calls run and
fed back, ``mcp_list_tools`` / ``mcp_call`` items and their stream events, the step cap, and refusals of anything
but a configured server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.engine import GenerationRequest
from tests.server._support import get, post, run, stream_then_disconnect

SERVER = str(Path(__file__).parents[1] / "mcp" / "weather_server.py")
STDIO = {"servers": {"weather": {"command": sys.executable, "args": [SERVER]}}}


def configure(mcp: dict[str, Any]) -> None:
    """Write ``mcp`` as the [mcp] table of $KAIYUAN_HOME/kaiyuan.toml (each test has its own home)."""
    lines = ["[mcp]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in mcp.items() if key != "servers"]
    for name, table in mcp["servers"].items():
        lines.append(f"[mcp.servers.{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {pairs} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    home = Path(os.environ["KAIYUAN_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "kaiyuan.toml").write_text("\n".join(lines) + "\n")


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
MCP_TOOL = {"type": "mcp", "server_label": "weather", "require_approval": "never"}


def prompt_text(request: GenerationRequest) -> str:
    """The prompt as text (FakeEngine: ids below 256 are bytes)."""
    return bytes(t for t in request.prompt if t < 256).decode("utf-8", errors="replace")


def weather_model(request: GenerationRequest) -> list[str]:
    """Calls get_weather until it has read a result, then answers with it."""
    prompt = prompt_text(request)
    if "sunny, 25C" in prompt:
        return ["It", " is", " sunny."]
    return [CALL]


def body(**kw: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "input": "What is the weather in Paris?",
        "tools": [MCP_TOOL],
        "max_output_tokens": 256,
        **kw,
    }


def named_events(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(block.split("\n")[1].removeprefix("data: "))
        for block in text.split("\n\n")
        if block.strip()
    ]


def test_loop_over_stdio_lists_calls_and_answers(fake_server) -> None:
    configure(STDIO)
    app, models = fake_server(weather_model)
    data = run(post(app, "/v1/responses", body())).json()
    assert data["status"] == "completed", data
    listing, call, message = data["output"]
    assert listing["type"] == "mcp_list_tools" and listing["server_label"] == "weather"
    assert {t["name"] for t in listing["tools"]} == {"get_weather", "flood"}
    assert call["type"] == "mcp_call" and call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["output"] == "The weather in Paris is sunny, 25C." and call["error"] is None
    assert message["content"][0]["text"] == "It is sunny."
    requests = models.engines["fake:latest"].requests
    assert len(requests) == 2 and "Get the current weather of a city." in prompt_text(requests[0])
    assert data["usage"]["output_tokens"] == 4  # both turns


def test_allowed_tools_and_stream_events(fake_server) -> None:
    configure(STDIO)
    app, models = fake_server(weather_model)
    tool = {**MCP_TOOL, "allowed_tools": ["get_weather"]}
    events = named_events(run(post(app, "/v1/responses", body(tools=[tool], stream=True))).text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for expected in (
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_text.delta",
    ):
        assert expected in kinds
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert [t["name"] for t in final["output"][0]["tools"]] == ["get_weather"]
    assert "flood" not in prompt_text(models.engines["fake:latest"].requests[0])


def test_a_loop_that_never_ends_is_capped(fake_server) -> None:
    configure({**STDIO, "max_steps": 2})
    app, _ = fake_server(lambda request: [CALL])
    data = run(post(app, "/v1/responses", body())).json()
    kinds = [item["type"] for item in data["output"]]
    assert kinds == ["mcp_list_tools", "mcp_call", "mcp_call", "message"] and data["status"] == "completed"


def test_a_streamed_loop_that_never_ends_is_capped(fake_server) -> None:
    configure({**STDIO, "max_steps": 2})
    app, _ = fake_server(lambda request: [CALL])
    events = named_events(run(post(app, "/v1/responses", body(stream=True))).text)
    assert events[-1]["type"] == "response.completed"
    kinds = [item["type"] for item in events[-1]["response"]["output"]]
    assert kinds == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]


def test_a_server_named_twice_is_refused_before_any_listing(fake_server) -> None:
    # each mcp tool is one listing on its server: a request naming a server 3,000 times must not cost 3,000
    configure(STDIO)
    app, models = fake_server(weather_model)
    tools = [{**MCP_TOOL, "allowed_tools": [f"t{i}"]} for i in range(3000)]
    started = time.monotonic()
    resp = run(post(app, "/v1/responses", body(tools=tools)))
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tools", resp.text
    assert "named by more than one mcp tool" in resp.json()["error"]["message"]
    assert time.monotonic() - started < 5 and not models.engines


def test_a_tool_that_never_answers_times_out_and_the_model_goes_on(fake_server) -> None:
    hanging = {"weather": {**STDIO["servers"]["weather"], "env": {"WEATHER_SERVER_HANG": "1"}}}
    configure({"servers": hanging, "call_timeout_s": 2})

    def model(request: GenerationRequest) -> list[str]:
        if "did not answer" in prompt_text(request):
            return ["It", " timed", " out."]
        return ['<tool_call>\n{"name": "hang", "arguments": {}}\n</tool_call>']

    app, _ = fake_server(model)
    started = time.monotonic()
    data = run(post(app, "/v1/responses", body())).json()
    elapsed = time.monotonic() - started
    _, call, message = data["output"]
    assert call["type"] == "mcp_call" and call["name"] == "hang" and call["status"] == "failed"
    assert call["error"] == "the tool 'hang' did not answer within 2 s" and call["output"] is None
    assert message["content"][0]["text"] == "It timed out." and data["status"] == "completed"
    assert elapsed < 30, elapsed  # the 2 s timeout, plus starting the server on a loaded machine


def test_a_client_that_leaves_mid_loop_stops_it(fake_server) -> None:
    # what the web chat's Stop does: after the tool call the model would write a long answer; leaving ends it
    configure(STDIO)

    def model(request: GenerationRequest) -> list[str]:
        return ["tok"] * 5000 if "sunny, 25C" in prompt_text(request) else [CALL]

    app, models = fake_server(model, delay=0.002, n_ctx=20000)

    async def scenario() -> None:
        # the client leaves after response.created and .in_progress, while the loop is at its first turn or
        # tool call; the app returns (a loop that went on would write the long answer first)
        await stream_then_disconnect(app, "/v1/responses", body(stream=True), after_chunks=2)
        await asyncio.sleep(0.5)
        engine = models.engines.get("fake:latest")
        assert engine is None or (engine.stats().running == 0 and len(engine.requests) <= 1)

    run(scenario())


def test_tool_output_is_capped(fake_server) -> None:
    configure({**STDIO, "max_output_chars": 50})
    flood = '<tool_call>\n{"name": "flood", "arguments": {"lines": 1000}}\n</tool_call>'

    def model(request: GenerationRequest) -> list[str]:
        return ["done"] if "line 1" in prompt_text(request) else [flood]

    app, _ = fake_server(model)
    data = run(post(app, "/v1/responses", body())).json()
    call = data["output"][1]
    assert call["output"].endswith("[output cut at 50 characters]") and len(call["output"]) < 100


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "mcp", "server_label": "nope", "require_approval": "never"}, "tools"),
        ({**MCP_TOOL, "server_url": "http://169.254.169.254/latest"}, "tools[0].server_url"),
        ({**MCP_TOOL, "headers": {"Authorization": "x"}}, "tools[0].headers"),
        ({**MCP_TOOL, "require_approval": "always"}, "tools[0].require_approval"),
        ({"type": "mcp", "require_approval": "never"}, "tools[0]"),
    ],
)
def test_only_configured_servers_can_be_named(fake_server, tool: dict[str, Any], param: str) -> None:
    configure(STDIO)
    app, models = fake_server(weather_model)
    resp = run(post(app, "/v1/responses", body(tools=[tool])))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert not models.engines  # nothing ran


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_loop_over_streamable_http(fake_server, http_server: str) -> None:
    configure({"servers": {"weather": {"url": http_server, "headers": {"X-Test": "1"}}}})
    app, _ = fake_server(weather_model)
    data = run(post(app, "/v1/responses", body()))
    assert data.status_code == 200, data.text
    output = data.json()["output"]
    assert [item["type"] for item in output] == ["mcp_list_tools", "mcp_call", "message"]
    assert output[1]["output"] == "The weather in Paris is sunny, 25C."


def test_unreachable_server_is_a_clean_error(fake_server) -> None:
    unused = f"http://127.0.0.1:{free_port()}/mcp"
    configure({"servers": {"weather": {"url": unused}}, "connect_timeout_s": 5})
    app, _ = fake_server(weather_model)
    resp = run(post(app, "/v1/responses", body()))
    assert resp.status_code == 424 and "weather" in resp.json()["error"]["message"]


def test_server_list_names_servers_and_nothing_else(fake_server, http_server: str) -> None:
    """What the web chat's tools switch reads: each configured server by name, never its command, URL or headers
    (they can hold secrets); with an API key set, the list needs it like the API."""
    configure(
        {"servers": {**STDIO["servers"], "search": {"url": http_server, "headers": {"X-Key": "s3cret"}}}}
    )
    app, _ = fake_server(weather_model)
    resp = run(get(app, "/kaiyuan/mcp/servers"))
    assert resp.status_code == 200 and resp.json() == {"servers": [{"name": "search"}, {"name": "weather"}]}
    assert "s3cret" not in resp.text and SERVER not in resp.text and http_server not in resp.text
    keyed, _ = fake_server(weather_model, settings={"api_key": "sesame"})
    assert run(get(keyed, "/kaiyuan/mcp/servers")).status_code == 401
    authed = run(get(keyed, "/kaiyuan/mcp/servers", headers={"Authorization": "Bearer sesame"}))
    assert authed.json()["servers"][1] == {"name": "weather"}


def test_server_list_is_empty_without_servers(fake_server) -> None:
    app, _ = fake_server(weather_model)
    assert run(get(app, "/kaiyuan/mcp/servers")).json() == {"servers": []}
