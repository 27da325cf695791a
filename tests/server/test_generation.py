"""``_generation``'s stream helpers: keep-alive events while the model is silent (Anthropic's ``ping`` during a
long prefill), and named SSE events with an error event when a stream fails after it started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel

from kaiyuan.errors import Overloaded
from kaiyuan.server._generation import named_sse, with_keepalive
from tests.server._support import run


def test_keepalive_fills_silence_and_keeps_order() -> None:
    async def scenario() -> list[str]:
        gate = asyncio.Event()

        async def items() -> AsyncIterator[str]:
            yield "a"
            await gate.wait()  # silent until a keep-alive has gone out
            yield "b"

        out = []
        async for item in with_keepalive(items(), lambda: "ping", every=0.01):
            out.append(item)
            if item == "ping":
                gate.set()
        return out

    out = run(scenario())
    assert out[0] == "a" and out[-1] == "b" and set(out[1:-1]) == {"ping"}


class Event(BaseModel):
    type: str
    text: str = ""


def test_named_sse_writes_event_names_and_an_error_event() -> None:
    async def events() -> AsyncIterator[BaseModel]:
        yield Event(type="first", text="x")
        raise Overloaded("queue full")

    async def scenario() -> bytes:
        return b"".join(
            [part async for part in named_sse(events(), lambda exc: Event(type="error", text=str(exc)))]
        )

    body = run(scenario()).decode()
    assert body == (
        'event: first\ndata: {"type":"first","text":"x"}\n\n'
        'event: error\ndata: {"type":"error","text":"queue full"}\n\n'
    )
