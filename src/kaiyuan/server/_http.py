"""HTTP plumbing shared by the route modules: API-key check, request accounting, SSE responses, and running a
non-streamed generation while watching for the client going away.

Owns: the ASGI middleware that enforces ``Authorization: Bearer <key>`` on the API prefixes (``/v1``, ``/api``,
``/kaiyuan``; ``/health``, ``/metrics``, ``/openapi.json`` and the web UI stay open) and counts answered
requests for ``/metrics``; ``EventStreamResponse`` (``text/event-stream`` that always runs its ``on_close``,
also when the client disconnects, so the generation is cancelled and its slot freed); ``sse_events`` (objects →
``data: …`` lines, errors mid-stream as an OpenAI error event, then ``data: [DONE]``). Must not know models.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaiyuan.errors import KaiyuanError
from kaiyuan.server._errors import error_body

__all__ = [
    "PROTECTED_PREFIXES",
    "ApiMiddleware",
    "ClosingStreamResponse",
    "EventStreamResponse",
    "run_watching_disconnect",
    "sse_events",
]

log = logging.getLogger(__name__)

PROTECTED_PREFIXES = ("/v1/", "/api/", "/kaiyuan/")

T = TypeVar("T")


class ApiMiddleware:
    """Bearer-key check on the API prefixes, and one ``kaiyuan_requests_total`` count per answered request."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, count: Callable[[str, int], None]) -> None:
        self.app = app
        self.api_key = api_key
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.api_key and path.startswith(PROTECTED_PREFIXES) and not self._authorized(scope):
            await self._deny(path, send)
            self.count(_endpoint_of(scope, path), 401)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.count(_endpoint_of(scope, path), status)

    def _authorized(self, scope: Scope) -> bool:
        """``Authorization: Bearer <key>``, or ``x-api-key: <key>`` (what Anthropic's clients send)."""
        assert self.api_key is not None
        key = self.api_key.encode()
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key):
                    return True
            elif name == b"x-api-key" and hmac.compare_digest(value.strip(), key):
                return True
        return False

    @staticmethod
    async def _deny(path: str, send: Send) -> None:
        message = (
            "missing or wrong API key: send the header 'Authorization: Bearer <key>' (or 'x-api-key: <key>') with "
            "the key the server was started with (--api-key / KAIYUAN_API_KEY)"
        )
        if path.startswith("/api/"):  # the Ollama skin's error shape
            body = ('{"error": "' + message.replace('"', "'") + '"}').encode()
        elif path.startswith("/v1/messages"):  # the Anthropic skin's
            error = {"type": "authentication_error", "message": message}
            body = json.dumps({"type": "error", "error": error}).encode()
        else:
            body = error_body(message, "authentication_error", None, "invalid_api_key")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _endpoint_of(scope: Scope, path: str) -> str:
    """The route template (``/v1/models/{model_id}``) for metrics labels; unmatched paths share one label."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    return "unmatched"


class ClosingStreamResponse(StreamingResponse):
    """A streamed response whose ``on_close`` runs exactly once however the stream ends (finished, failed or
    the client went away), so the generation behind it is cancelled and its slot freed. Subclasses set
    ``media_type`` (SSE for OpenAI, NDJSON for Ollama)."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class EventStreamResponse(ClosingStreamResponse):
    """``text/event-stream`` (OpenAI's server-sent events)."""

    media_type = "text/event-stream"


async def sse_events(objects: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    """``data: {json}`` per object, then ``data: [DONE]``. An error mid-stream becomes one OpenAI error event
    (the status line was already sent) before ``[DONE]``."""
    try:
        async for obj in objects:
            yield b"data: " + obj.model_dump_json(exclude_unset=True).encode() + b"\n\n"
    except KaiyuanError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        yield b"data: " + error_body(exc.message, exc.error_type, exc.param, exc.code) + b"\n\n"
    except Exception:
        log.exception("stream failed")
        body = error_body(
            "internal error; the server log has the details", "server_error", None, "internal_error"
        )
        yield b"data: " + body + b"\n\n"
    yield b"data: [DONE]\n\n"


async def run_watching_disconnect(
    request: Request, work: Awaitable[T], on_disconnect: Callable[[], Any], *, poll: float = 0.25
) -> T:
    """Await ``work``; if the client disconnects first, call ``on_disconnect`` (cancel the generation) and still
    wait for ``work`` to wind down."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client went away; cancelling its generation")
                on_disconnect()
                return await task
    finally:
        if not task.done():
            task.cancel()
