"""GenerationHandle: the consumer side of one generation, fed by an engine thread.

The engine's thread calls ``push``/``finish``; the consumer iterates synchronously (CLI) or asynchronously
(server) and may ``cancel``. Async waiting uses ``loop.call_soon_threadsafe`` so the event loop never blocks on the
engine thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaiyuan.engine._protocol import TokenEvent

__all__ = ["GenerationHandle", "Waker", "wake_events"]

# How a handle wakes its async consumer: given the consumer's loop and the event it waits on. The default is one
# ``loop.call_soon_threadsafe(event.set)`` per push; an engine may gather them (one cross-thread call per step).
Waker = Callable[[asyncio.AbstractEventLoop, asyncio.Event], None]


class GenerationHandle:
    """Stream of ``TokenEvent`` for one request. ``finish_reason`` is set when the stream ends:
    ``stop`` (end of generation token), ``length`` (max_tokens or context full) or ``cancelled``."""

    def __init__(
        self,
        prompt_tokens: int,
        on_cancel: Callable[[GenerationHandle], None] | None = None,
        *,
        waker: Waker | None = None,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0  # prompt tokens reused from the prefix cache; set by the engine
        self.generated_tokens = 0
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self._events: deque[TokenEvent] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._on_cancel = on_cancel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._waker = waker

    # -- producer side (engine thread) -------------------------------------------------------------
    def push(self, event: TokenEvent, *, wake: bool = True) -> None:
        """Add one event. ``wake=False`` leaves waking an async consumer to ``wake_all`` (an engine that pushes
        to many handles per step wakes their event loop once, not once per token)."""
        with self._cond:
            if self._done:
                return
            self._events.append(event)
            self.generated_tokens += 1
            self._cond.notify_all()
            if wake:
                self._wake()

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        with self._cond:
            if self._done:
                return
            self._done = True
            self.finish_reason = "cancelled" if self._cancelled else reason
            self.error = error
            self._cond.notify_all()
            self._wake()

    @staticmethod
    def wake_all(handles: Iterable[GenerationHandle]) -> None:
        """Wake the async consumers of ``handles`` with one event-loop callback per loop."""
        wake_events((h._loop, h._wakeup) for h in handles if h._loop is not None and h._wakeup is not None)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def done(self) -> bool:
        return self._done

    def _wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            if self._waker is not None:
                self._waker(self._loop, self._wakeup)
                return
            with contextlib.suppress(RuntimeError):  # loop closed: the consumer is gone
                self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- consumer side -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating; the engine frees the slot within one step. Safe to call more than once."""
        with self._cond:
            if self._done or self._cancelled:
                return
            self._cancelled = True
        if self._on_cancel is not None:
            self._on_cancel(self)

    def _take(self) -> list[TokenEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def __iter__(self) -> Iterator[TokenEvent]:
        while True:
            with self._cond:
                while not self._events and not self._done:
                    self._cond.wait()
                events = self._take()
                done = self._done
            yield from events
            if done and not events:
                break
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        with self._cond:
            self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
        assert self._wakeup is not None
        while True:
            with self._cond:
                events = self._take()
                done = self._done
                if not events and not done:
                    self._wakeup.clear()
            if events:
                for event in events:
                    yield event
                continue
            if done:
                break
            await self._wakeup.wait()
        if self.error is not None:
            raise self.error


def wake_events(waiting: Iterable[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    """Set consumers' events from another thread: one ``call_soon_threadsafe`` per loop, not one per event."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for loop, event in waiting:
        by_loop.setdefault(loop, []).append(event)
    for loop, events in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: the consumers are gone
            loop.call_soon_threadsafe(_set_events, events)


def _set_events(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()
