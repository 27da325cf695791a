"""Waking the consumers of token streams once per engine step, not once per token.

The vLLM engine's requests run on an event loop of the engine's own; their consumers (the server's streams) wait
on another loop. ``GenerationHandle`` wakes its consumer with ``loop.call_soon_threadsafe`` on every token, a
cross-thread wake-up (a write to the loop's wake-up file descriptor, under the GIL) per token and stream. With
8 streams vLLM hands back 8 tokens per step, and profiling ``kaiyuan serve`` at 8 streams put a quarter of the
time the server process held the GIL in those calls. ``StepWaker.wake`` (a handle's ``waker``) collects the
wake-ups of one pass of the engine loop and sends them as one cross-thread call per consumer loop.

Owns only that; knows nothing of vLLM, requests or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from kaiyuan.engine._handle import wake_events

__all__ = ["StepWaker"]


class StepWaker:
    """Defers consumer wake-ups made on ``loop``'s thread to the end of the current pass of ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self._pending: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}  # each consumer's event once
        self._scheduled = False

    def wake(self, consumer: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        if threading.current_thread() is not self._thread:  # not from the engine loop: wake at once
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed: it is gone
                consumer.call_soon_threadsafe(event.set)
            return
        self._pending[event] = consumer
        if not self._scheduled:
            # Callbacks queued now run after every task already woken in this pass: the other requests'
            # tokens of the same step are pushed first.
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        wake_events((consumer, event) for event, consumer in pending.items())
