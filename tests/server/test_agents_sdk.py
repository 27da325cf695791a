"""OpenAI's Agents SDK (``openai-agents``) against a real ``kaiyuan serve`` (SmolLM2, llama.cpp, 1 thread): an
``Agent`` with a function tool, run by ``Runner.run`` over the Responses API to a final answer — the SDK calls the
model, runs the tool in this process, sends its output back with ``previous_response_id``-free item input, and the
model answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.test_openai_sdk_integration import Server, start_server

agents = pytest.importorskip("agents", reason="the openai-agents package is not installed (test extra)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("agents-home"))


def test_agent_with_a_function_tool_runs_to_a_final_answer(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set up as the README says: the SDK's default client reads OPENAI_BASE_URL; tracing off, or the SDK would
    # upload the run to api.openai.com
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather of a city."""
        asked.append(city)
        return f"The weather in {city} is sunny, 25C."

    agent = agents.Agent(
        name="weather",
        instructions="Answer questions about the weather. Use the get_weather tool.",
        tools=[get_weather],
        model="smollm2",
        # the first turn must call the tool (a 135M model might answer from its own head); the SDK resets
        # tool_choice after the call (reset_tool_choice), so the second turn is free to answer
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=96),
    )

    async def run() -> object:
        return await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4)

    result = asyncio.run(run())
    kinds = [item.type for item in result.new_items]  # type: ignore[attr-defined]
    assert kinds[0] == "tool_call_item" and "tool_call_output_item" in kinds, kinds
    assert kinds[-1] == "message_output_item", kinds
    assert asked and set(asked) == {"Paris"}  # a small model may call it again before it answers
    outputs = [item.output for item in result.new_items if item.type == "tool_call_output_item"]  # type: ignore[attr-defined]
    assert outputs == ["The weather in Paris is sunny, 25C."] * len(asked)
    assert isinstance(result.final_output, str) and result.final_output.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in (Path(server.home) / "serve.log").read_text()
