"""The Responses skin in-process (FakeEngine): the response object and its output items, the streamed event
sequence (sequence numbers, output and content indices, every item announced before its deltas), reasoning and
function-call items, stored responses (GET, DELETE, input_items, previous_response_id), background + cancel,
and 4xx for hostile or unsupported input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.server._support import client, get, post, run, stream_then_disconnect

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "fake", "input": "Hi", **kw}


def named_events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {data['type']}", block
        out.append(data)
    return out


def test_text_response_is_stored_and_listed(fake_server) -> None:
    app, _ = fake_server(["Hello", " world"])

    async def go() -> list[Any]:
        async with client(app) as c:
            created = (
                await c.post("/v1/responses", json=body(instructions="Be brief.", metadata={"k": "v"}))
            ).json()
            rid = created["id"]
            fetched = (await c.get(f"/v1/responses/{rid}")).json()
            items = (await c.get(f"/v1/responses/{rid}/input_items")).json()
            deleted = await c.delete(f"/v1/responses/{rid}")
            gone = await c.get(f"/v1/responses/{rid}")
            return [created, fetched, items, deleted, gone]

    created, fetched, items, deleted, gone = run(go())
    assert (
        created["id"].startswith("resp_")
        and created["object"] == "response"
        and created["status"] == "completed"
    )
    assert created["instructions"] == "Be brief." and created["metadata"] == {"k": "v"}
    (message,) = created["output"]
    assert (
        message["type"] == "message" and message["role"] == "assistant" and message["id"].startswith("msg_")
    )
    assert message["content"][0]["type"] == "output_text" and message["content"][0]["text"] == "Hello world"
    usage = created["usage"]
    assert usage["output_tokens"] == 2 and usage["total_tokens"] == usage["input_tokens"] + 2
    assert fetched == created
    assert items["object"] == "list" and len(items["data"]) == 1
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "Hi"}]
    assert deleted.json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    assert gone.status_code == 404


def test_stream_event_sequence(fake_server) -> None:
    app, _ = fake_server(["Hello", " world"])
    events = named_events(run(post(app, "/v1/responses", body(stream=True))).text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    item_id = events[2]["item"]["id"]
    for e in events[3:8]:
        assert e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0
    assert events[6]["text"] == "Hello world"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello world"
    # a streamed response is stored too
    assert run(get(app, f"/v1/responses/{final['id']}")).json()["output"] == final["output"]


def test_reasoning_item_then_message(fake_server) -> None:
    app, _ = fake_server(["<think>", "hmm", "</think>", "Paris"], template="Qwen-Qwen3-0.6B")
    data = run(post(app, "/v1/responses", body())).json()
    reasoning, message = data["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": "hmm"}
    ]
    assert message["content"][0]["text"] == "Paris"
    assert data["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    events = named_events(run(post(app, "/v1/responses", body(stream=True))).text)
    added = [
        (e["output_index"], e["item"]["type"]) for e in events if e["type"] == "response.output_item.added"
    ]
    assert added == [(0, "reasoning"), (1, "message")]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert deltas == "hmm"


def test_function_call_items(fake_server) -> None:
    app, models = fake_server([CALL[:15], CALL[15:40], CALL[40:]])
    data = run(
        post(app, "/v1/responses", body(tools=[WEATHER], tool_choice="required", max_output_tokens=256))
    ).json()
    (call,) = data["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["id"].startswith("fc_")
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"]
    assert models.engines["fake:latest"].requests[0].grammar
    events = named_events(run(post(app, "/v1/responses", body(tools=[WEATHER], stream=True))).text)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert json.loads(done["arguments"]) == {"city": "Paris"} and done["name"] == "get_weather"
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta")


def test_previous_response_id_continues_the_conversation(fake_server) -> None:
    app, models = fake_server(["Paris"])
    first = run(
        post(app, "/v1/responses", body(input="Capital of France?", instructions="Old rules."))
    ).json()
    follow = [
        {"role": "user", "content": "And of Italy?"},
    ]
    second = run(post(app, "/v1/responses", body(input=follow, previous_response_id=first["id"]))).json()
    assert second["previous_response_id"] == first["id"] and second["status"] == "completed"
    engine = models.engines["fake:latest"]
    prompt = engine.detokenize(engine.requests[-1].prompt)
    assert prompt.index("Capital of France?") < prompt.index("Paris") < prompt.index("And of Italy?")
    assert "Old rules." not in prompt  # instructions are not carried over (as OpenAI does)


def test_function_call_round_trip_items(fake_server) -> None:
    app, models = fake_server(["It is sunny."])
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "call it"}]},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 25C"},
    ]
    resp = run(post(app, "/v1/responses", body(input=items, tools=[WEATHER])))
    assert resp.status_code == 200, resp.text
    engine = models.engines["fake:latest"]
    prompt = engine.detokenize(engine.requests[0].prompt)
    assert prompt.index("get_weather") < prompt.index("sunny, 25C")


def test_max_output_tokens_gives_incomplete(fake_server) -> None:
    app, _ = fake_server(["a", "b", "c", "d"])
    data = run(post(app, "/v1/responses", body(max_output_tokens=2))).json()
    assert data["status"] == "incomplete" and data["incomplete_details"] == {"reason": "max_output_tokens"}
    events = named_events(run(post(app, "/v1/responses", body(max_output_tokens=2, stream=True))).text)
    assert events[-1]["type"] == "response.incomplete"


def test_json_schema_format_sets_a_grammar(fake_server) -> None:
    app, models = fake_server(['{"n": 1}'])
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    text = {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}}
    data = run(post(app, "/v1/responses", body(text=text))).json()
    assert json.loads(data["output"][0]["content"][0]["text"]) == {"n": 1}
    assert data["text"]["format"]["type"] == "json_schema"
    assert models.engines["fake:latest"].requests[0].grammar


def test_store_false_is_not_stored(fake_server) -> None:
    app, _ = fake_server(["x"])
    data = run(post(app, "/v1/responses", body(store=False))).json()
    assert data["store"] is False
    assert run(get(app, f"/v1/responses/{data['id']}")).status_code == 404


def test_background_then_cancel(fake_server) -> None:
    app, _ = fake_server(["tok"] * 400, delay=0.05)

    async def go() -> tuple[Any, Any, Any]:
        async with client(app) as c:
            queued = (await c.post("/v1/responses", json=body(background=True))).json()
            for _ in range(100):
                polled = (await c.get(f"/v1/responses/{queued['id']}")).json()
                if polled["status"] == "in_progress":
                    break
                await asyncio.sleep(0.05)
            cancelled = (await c.post(f"/v1/responses/{queued['id']}/cancel")).json()
            return queued, polled, cancelled

    queued, polled, cancelled = run(go())
    assert queued["status"] == "queued" and queued["background"] is True
    assert polled["status"] == "in_progress"
    assert cancelled["status"] == "cancelled"


def test_background_runs_to_completion(fake_server) -> None:
    app, _ = fake_server(["Hello"])

    async def go() -> Any:
        async with client(app) as c:
            queued = (await c.post("/v1/responses", json=body(background=True))).json()
            for _ in range(200):
                polled = (await c.get(f"/v1/responses/{queued['id']}")).json()
                if polled["status"] not in ("queued", "in_progress"):
                    return polled
                await asyncio.sleep(0.02)
            return polled

    done = run(go())
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "Hello"


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        (body(previous_response_id="resp_nope"), 404, "previous_response_id"),
        (body(input=[{"type": "hologram"}]), 400, "input[0]"),
        (body(input=[{"role": "user", "content": "x"}] * 5000), 400, "input"),
        (
            body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]),
            400,
            None,
        ),
        (body(tools=[{"type": "web_search"}]), 400, "tools[0].type"),
        (body(tool_choice="required"), 400, "tool_choice"),
        (body(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"}), 400, "tool_choice"),
        (body(background=True, store=False), 400, "background"),
        (body(conversation="conv_1"), 400, "conversation"),
        (body(input=[{"type": "item_reference", "id": "msg_1"}]), 400, "input[0]"),
        (body(model="nope"), 404, "model"),
        # metadata is stored with the response: OpenAI's bounds (16 pairs, 64-character keys, 512-character values)
        (body(metadata={f"k{i}": "v" for i in range(17)}), 400, "metadata"),
        (body(metadata={"k": "v" * 513}), 400, "metadata"),
    ],
)
def test_bad_requests_are_4xx(fake_server, payload: Any, status: int, param: str | None) -> None:
    app, _ = fake_server(["x"])
    resp = run(post(app, "/v1/responses", payload))
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"]
    if param is not None:
        assert (error["param"] or "").startswith(param), error


def test_unknown_response_routes_are_404(fake_server) -> None:
    app, _ = fake_server(["x"])

    async def go() -> list[int]:
        async with client(app) as c:
            return [
                (await c.get("/v1/responses/resp_nope")).status_code,
                (await c.delete("/v1/responses/resp_nope")).status_code,
                (await c.get("/v1/responses/resp_nope/input_items")).status_code,
                (await c.post("/v1/responses/resp_nope/cancel")).status_code,
            ]

    assert run(go()) == [404, 404, 404, 404]


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/responses", {"model": "fake", "input": "Hi", "stream": True}),
        (
            "/v1/messages",
            {
                "model": "fake",
                "max_tokens": 9000,
                "stream": True,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        ),
    ],
)
def test_client_disconnect_mid_stream_frees_the_slot(fake_server, path: str, payload: dict[str, Any]) -> None:
    app, models = fake_server(["tok"] * 5000, delay=0.002, n_ctx=20000)

    async def scenario() -> None:
        received = await stream_then_disconnect(app, path, payload, after_chunks=5)
        assert len(received) < 100  # the stream stopped soon after the client left
        engine = models.engines["fake:latest"]
        deadline = time.time() + 3
        while engine.stats().running and time.time() < deadline:
            await asyncio.sleep(0.01)
        assert engine.stats().running == 0

    run(scenario())
