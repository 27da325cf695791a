"""ReplicaEngine, the front's engine over the replicas, with a stand-in for Ray Serve's deployment handle: its
running/waiting count the requests the front has in flight at once, as a single server's engine does, instead
of lagging by the replicas' once-a-second reports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.cluster._calls import ReplicaCall, StreamEnd
from kaiyuan.cluster._front_engine import EventLoopThread, ReplicaEngine
from kaiyuan.cluster._router import ReplicaView
from kaiyuan.config import load_settings
from kaiyuan.engine import GenerationRequest, TokenEvent
from kaiyuan.store import ModelStore


class _Stream:
    """One replica stream as ``handle.options(stream=True).generate.remote(call)`` returns it: the batches the
    test sends, one at a time."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.cancelled = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> list[Any]:
        return await self.batches.get()

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """The parts of a ``DeploymentHandle`` ReplicaEngine uses for generation."""

    def __init__(self) -> None:
        self.streams: list[_Stream] = []

    def options(self, **_: Any) -> _Handle:
        return self

    @property
    def generate(self) -> _Handle:
        return self

    def remote(self, call: ReplicaCall) -> _Stream:
        stream = _Stream()
        self.streams.append(stream)
        return stream


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.close()


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_running_and_waiting_are_the_requests_in_flight_here(
    kaiyuan_home: Path, loop: EventLoopThread
) -> None:
    manifest = ModelStore.from_settings(load_settings()).resolve("smollm2")
    handle = _Handle()
    reported: list[dict[str, Any]] = []  # what the replicas last said: nothing yet
    engine = ReplicaEngine(
        handle,
        manifest,
        n_ctx=1024,
        max_in_flight=8,
        loop=loop,
        replicas=lambda: [ReplicaView(f"r{i}", stats, None) for i, stats in enumerate(reported)],
    )
    try:
        first = engine.submit(GenerationRequest(prompt=[1, 2, 3]))
        second = engine.submit(GenerationRequest(prompt=[1, 2, 3]))
        _until(lambda: len(handle.streams) == 2)
        stats = engine.stats()
        assert (stats.running, stats.waiting) == (2, 0)  # both on a replica, none reported queued

        reported.append({"models": {manifest.blob.digest: {"running": 0, "waiting": 2}}, "slots": 4})
        stats = engine.stats()
        assert (stats.running, stats.waiting, stats.slots) == (0, 2, 4)

        # a token streams for the first: it decodes, whatever the replicas said a moment ago
        loop.loop.call_soon_threadsafe(handle.streams[0].batches.put_nowait, [TokenEvent(42, "hi")])
        _until(lambda: first.generated_tokens == 1)
        stats = engine.stats()
        assert (stats.running, stats.waiting) == (1, 1)

        # the first ends, the client of the second goes away: nothing is in flight the moment they are done
        loop.loop.call_soon_threadsafe(handle.streams[0].batches.put_nowait, [StreamEnd("stop")])
        second.cancel()
        _until(lambda: first.done and second.done)
        _until(lambda: engine.stats().running + engine.stats().waiting == 0)
        assert first.finish_reason == "stop" and second.finish_reason == "cancelled"
        assert handle.streams[1].cancelled  # the replica's call is cancelled too, which frees its slot
    finally:
        engine.close()


def test_closing_the_loop_unwinds_what_still_runs_and_refuses_more() -> None:
    """A task still pending when the loop stops would be destroyed half-way ("coroutine ... was never awaited",
    an unraisable warning): close cancels it and lets it unwind; later submissions are refused, not lost."""
    thread = EventLoopThread()
    unwound: list[str] = []
    started = threading.Event()

    async def waits_forever() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            unwound.append("finally ran")

    future = thread.submit(waits_forever())
    assert started.wait(5)
    thread.close()
    assert unwound == ["finally ran"]
    assert future.cancelled()

    async def never_runs() -> None:
        raise AssertionError("submitted after close")

    with pytest.raises(RuntimeError, match="closed"):
        thread.submit(never_runs())
    thread.close()  # idempotent
