"""One generation served over HTTP for the agent API skins (Anthropic Messages, OpenAI Responses).

Owns: leasing the model and starting the native chat stream with the model's default options under the
request's own (``begin``), collecting it while watching for the client going away (``Running.collect``), and the
named-event SSE they stream (``event: <type>`` + ``data: {json}``, keep-alive events while the model is silent,
e.g. during a long prefill). ``Running.close`` runs exactly once on every path: it cancels the generation, records
metrics and frees the lease. Must not know wire formats beyond "an object with a ``type``".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from kaiyuan.chat import ChatResult, ChatStream, collect_stream, start_chat_async
from kaiyuan.errors import KaiyuanError
from kaiyuan.protocol import convert_shared
from kaiyuan.server._http import run_watching_disconnect
from kaiyuan.server._models import ModelLease
from kaiyuan.server._runtime import Runtime
from kaiyuan.types import ChatRequest, CompletionRequest

__all__ = ["Running", "begin", "named_sse", "with_keepalive"]

log = logging.getLogger(__name__)


@dataclass
class Running:
    """A started generation: its lease on the model, the native stream and the metrics timer."""

    lease: ModelLease
    stream: ChatStream
    timer: Any
    _closed: bool = field(default=False, init=False)

    @property
    def model(self) -> str:
        return self.lease.name

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stream.cancel()
        self.timer.finish(self.stream.usage)
        self.lease.release()

    async def collect(self, request: Request | None = None) -> ChatResult:
        """The whole result; with ``request``, a client that goes away cancels the generation. Closes."""
        try:
            if request is None:
                return await collect_stream(self.stream)
            return await run_watching_disconnect(request, collect_stream(self.stream), self.stream.cancel)
        finally:
            self.close()


async def begin(
    runtime: Runtime,
    native: ChatRequest | CompletionRequest,
    unset: set[str],
    start: Callable[..., Awaitable[ChatStream]] = start_chat_async,
) -> Running:
    """Lease ``native.model``, fill the sampling fields in ``unset`` from the model's default options, and start
    the generation (``start_chat_async``, or ``start_completion_async`` for a raw prompt). Errors (unknown model,
    context overflow, a full queue) raise here, before anything streams."""
    lease = await runtime.models.acquire(native.model)
    timer = runtime.metrics.timer(lease.name)
    try:
        native.sampling = convert_shared.with_model_options(
            native.sampling, unset, lease.model.default_options
        )
        stream = await start(lease.model, native, observer=timer)
    except BaseException:
        timer.finish(None)
        lease.release()
        raise
    return Running(lease, stream, timer)


async def with_keepalive(
    objects: AsyncIterator[Any], keepalive: Callable[[], Any], every: float
) -> AsyncIterator[Any]:
    """``objects`` as they come, with ``keepalive()`` put in whenever ``every`` seconds pass without one."""
    iterator = objects.__aiter__()
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield keepalive()
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending


async def named_sse(
    objects: AsyncIterator[BaseModel], on_error: Callable[[Exception], BaseModel]
) -> AsyncIterator[bytes]:
    """``event: <type>`` and ``data: {json}`` per object (the ``anthropic`` and ``openai`` SDKs route on the event
    name). An error mid-stream (the status line was sent already) becomes the event ``on_error`` makes."""
    try:
        async for obj in objects:
            yield _event(obj)
    except KaiyuanError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        yield _event(on_error(exc))
    except Exception as exc:
        log.exception("stream failed")
        yield _event(on_error(exc))


def _event(obj: BaseModel) -> bytes:
    name = str(getattr(obj, "type", "message"))
    return b"event: " + name.encode() + b"\ndata: " + obj.model_dump_json().encode() + b"\n\n"
