"""Ollama's ``keep_alive``: how long a model stays loaded after the last request that asked.

Owns the idle deadline per loaded model: after a request with ``keep_alive`` ends, the model is unloaded once it
has been idle (no request since, none running) for that many seconds; ``0`` unloads it as soon as it is idle,
``FOREVER`` keeps it until the ``ModelManager`` evicts it (LRU) or the server stops. Requests without
``keep_alive`` (every OpenAI request) leave the deadline as it is, and any use of the model restarts the idle
clock. Without any ``keep_alive`` a model stays loaded (kaiyuan's default, unlike Ollama's 5 minutes).

Timers run on the server's event loop; unloading goes through ``ModelManager.unload``. Must not know HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from kaiyuan.server._models import LoadedModel, ModelManager

__all__ = ["FOREVER_SECONDS", "KeepAlive"]

log = logging.getLogger(__name__)

# What /api/ps reports as the expiry of a model kept forever: Ollama's "the largest duration" (~292 years).
FOREVER_SECONDS = (2**63 - 1) / 1e9
_BUSY_POLL = 0.25  # seconds between checks while a model with an expired deadline still serves a request


class KeepAlive:
    """Idle deadlines of the models of one ``ModelManager``."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._seconds: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, name: str, seconds: float) -> None:
        """After a request on ``name`` (canonical) ended: unload once idle for ``seconds`` (``math.inf``: never).
        Call from the event loop."""
        self._seconds[name] = seconds
        self._cancel_timer(name)
        if math.isfinite(seconds):
            self._schedule(name, seconds)

    def expires_at(self, entry: LoadedModel) -> float:
        """Unix time the model will be unloaded if nothing uses it (far in the future when never)."""
        seconds = self._seconds.get(entry.name, math.inf)
        if not math.isfinite(seconds):
            return entry.last_used + FOREVER_SECONDS
        return entry.last_used + seconds

    def forget(self, name: str) -> None:
        self._seconds.pop(name, None)
        self._cancel_timer(name)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _schedule(self, name: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(max(0.0, delay), self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        task = asyncio.get_running_loop().create_task(self._check(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, name: str) -> None:
        seconds = self._seconds.get(name)
        entry = next((e for e in self._manager.loaded() if e.name == name), None)
        if entry is None or seconds is None or not math.isfinite(seconds):
            if entry is None:
                self._seconds.pop(name, None)  # unloaded another way (LRU, delete): the deadline goes with it
            return
        if entry.leases > 0:
            self._schedule(name, _BUSY_POLL)
            return
        remaining = entry.last_used + seconds - time.time()
        if remaining > 0:
            self._schedule(name, remaining)
            return
        self._seconds.pop(name, None)
        log.info("unloading %s (keep_alive %gs expired)", name, seconds)
        await self._manager.unload(name)
