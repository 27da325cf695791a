"""Graceful drain: on SIGTERM the server stops taking new API requests but lets the ones in flight finish.

``DrainGate`` wraps the ASGI app and counts API requests in flight (``/v1/``, ``/api/``; a stream counts until
its last byte). Once draining, a new API request is answered ``503`` with ``Retry-After`` in the envelope of its
skin (OpenAI's ``{"error": {...}}``, Ollama's ``{"error": "..."}``) and ``/health`` answers 503 so a load balancer
stops sending; ``/metrics`` keeps answering. ``DrainingServer`` is uvicorn's server with SIGTERM turned into
"drain, then stop": it keeps the socket open (new clients get the 503, not a refused connection) until nothing is
in flight or ``drain_timeout`` seconds have passed, then shuts down as uvicorn does. A second SIGTERM, or SIGINT
(Ctrl-C), stops at once as before.

Owns the drain state only. Must not know routes, models or Ray.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DrainGate", "DrainingServer"]

log = logging.getLogger(__name__)

_API = ("/v1/", "/api/")
RETRY_AFTER_S = 5


class DrainGate:
    """ASGI middleware: counts API requests in flight; refuses new ones with 503 once ``draining``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(_API) and path != "/health":
            await self.app(scope, receive, send)
            return
        if self.draining:
            await _refuse(path, send)
            return
        if path == "/health":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _refuse(path: str, send: Send) -> None:
    message = f"the server is shutting down and takes no new requests; retry in {RETRY_AFTER_S} s (another replica or instance will answer)"
    if path.startswith("/api/"):
        payload: object = {"error": message}
    elif path == "/health":
        payload = {"status": "draining"}
    else:
        payload = {"error": {"message": message, "type": "server_error", "param": None, "code": "draining"}}
    body = json.dumps(payload).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
            (b"connection", b"close"),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM meaning "drain ``gate`` for up to ``drain_timeout`` s, then stop"."""

    def __init__(self, config: uvicorn.Config, gate: DrainGate, drain_timeout: float) -> None:
        super().__init__(config)
        self.gate = gate
        self.drain_timeout = drain_timeout
        self._drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_deadline is None and not self.should_exit:
            # not recorded in _captured_signals: the process ends normally after the drain, no re-raised SIGTERM
            self._drain_deadline = time.monotonic() + self.drain_timeout
            self.gate.draining = True
            log.warning(
                "SIGTERM: draining %d request(s) in flight (up to %g s)",
                self.gate.in_flight,
                self.drain_timeout,
            )
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self._drain_deadline is None:
            return False
        return self.gate.in_flight == 0 or time.monotonic() >= self._drain_deadline
