"""Consumers of the vLLM engine's streams are woken once per pass of the engine loop, and miss nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("vllm")

from kaiyuan.engine import GenerationHandle, TokenEvent
from kaiyuan.engine.vllm._wakeups import StepWaker


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the cross-thread calls made into it."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(*args, **kwargs)


@pytest.fixture
def engine_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop, thread
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_eight_streams_get_every_token_with_one_wakeup_per_step(engine_loop) -> None:
    loop, thread = engine_loop
    waker = StepWaker(loop, thread)
    handles = [GenerationHandle(1, waker=waker.wake) for _ in range(8)]
    consumer = CountingLoop()
    steps = 5

    async def step(n: int) -> None:  # one engine step: every stream gets a token, as vLLM hands them back
        for i, handle in enumerate(handles):
            handle.push(TokenEvent(n, f"{i}:{n} "))
            if n == steps - 1:
                handle.finish("length")

    async def consume() -> list[str]:
        async def one(handle: GenerationHandle) -> str:
            return "".join([event.text async for event in handle])

        readers = [asyncio.ensure_future(one(h)) for h in handles]
        await asyncio.sleep(0.05)  # every reader waits on its handle
        for n in range(steps):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(step(n), loop))
            await asyncio.sleep(0.05)  # the consumer drains the step before the next one
        return await asyncio.gather(*readers)

    texts = consumer.run_until_complete(consume())
    consumer.close()
    assert texts == ["".join(f"{i}:{n} " for n in range(steps)) for i in range(8)]
    assert all(h.finish_reason == "length" for h in handles)
    # one wake-up per step for all eight streams (not one per token: 40), and each step's own future coming back
    assert consumer.threadsafe_calls == steps + steps


def test_pushes_from_another_thread_wake_at_once(engine_loop) -> None:
    loop, thread = engine_loop
    handle = GenerationHandle(1, waker=StepWaker(loop, thread).wake)

    async def consume() -> list[str]:
        async def produce() -> None:
            await asyncio.sleep(0.05)
            handle.push(TokenEvent(1, "a"))  # not the engine loop's thread: no pass will flush it
            handle.finish("stop")

        task = asyncio.ensure_future(asyncio.to_thread(asyncio.run, produce()))
        texts = [event.text async for event in handle]
        await task
        return texts

    assert asyncio.run(asyncio.wait_for(consume(), 5)) == ["a"]
