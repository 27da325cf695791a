"""The OpenAI Responses skin: ``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items`` and ``POST /v1/responses/{id}/cancel``.

Routes are thin: parse → ``convert_responses`` (with the stored conversation of ``previous_response_id``) → the
native chat path (``_generation.begin``) → output items → JSON, named-event SSE, or a background task that a
client polls and may cancel. ``store`` (default true) keeps each response in the ``ResponseStore`` under
KAIYUAN_HOME, so a conversation continues across server restarts. Errors use the app's OpenAI envelope; an error
after the stream started is an ``error`` event. Must not know llama.cpp or how messages become prompts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from kaiyuan.errors import InvalidRequest, KaiyuanError, ResponseNotFound
from kaiyuan.mcp import McpHub, McpUse, ToolListing, mcp_settings, run_tool_loop
from kaiyuan.protocol import convert_responses as conv
from kaiyuan.protocol import openai as oa
from kaiyuan.protocol import responses as rs
from kaiyuan.server._errors import ApiRoute
from kaiyuan.server._generation import Running, begin, named_sse
from kaiyuan.server._http import EventStreamResponse
from kaiyuan.server._response_store import ResponseStore, StoredResponse
from kaiyuan.server._runtime import Runtime, get_runtime
from kaiyuan.types import ChatRequest, Message

__all__ = ["router", "shutdown"]

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["responses"],
    route_class=ApiRoute,
    responses={
        status: {"model": oa.ErrorResponse, "description": text}
        for status, text in (
            (400, "Invalid request (the error names the param)"),
            (401, "Missing or wrong API key"),
            (403, "The license policy forbids this model"),
            (404, "Unknown model or response"),
            (429, "Queue full; retry after Retry-After seconds"),
        )
    },
)


@dataclass
class _Responses:
    """Per app: the store and the background responses still running (id → task, and their generations)."""

    store: ResponseStore
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    hub: McpHub | None = None  # sessions to the configured MCP servers, opened on first use


def _state(request: Request) -> _Responses:
    state = getattr(request.app.state, "responses", None)
    if state is None:
        settings = get_runtime(request).settings
        store = ResponseStore(
            settings.home / "responses.sqlite3",
            max_stored=settings.responses_max_stored,
            max_age_days=settings.responses_max_age_days,
        )
        state = request.app.state.responses = _Responses(store)
    assert isinstance(state, _Responses)
    return state


async def shutdown(app: Any) -> None:
    """End what the Responses routes hold for ``app``: background responses and MCP sessions (stdio servers)."""
    state = getattr(app.state, "responses", None)
    if not isinstance(state, _Responses):
        return
    for task in list(state.tasks.values()):
        task.cancel()
    if state.tasks:
        await asyncio.wait(set(state.tasks.values()), timeout=10)
    if state.hub is not None:
        await state.hub.close()


def _json(obj: Any) -> Response:
    body = obj.model_dump_json() if hasattr(obj, "model_dump_json") else obj
    return Response(body, media_type="application/json")


async def _stored(state: _Responses, response_id: str, param: str = "response_id") -> StoredResponse:
    stored = await asyncio.to_thread(state.store.get, response_id)
    if stored is None:
        raise ResponseNotFound(
            f"no stored response {response_id!r}: it was never stored (store: false), deleted, or evicted by the "
            "store's bounds (responses_max_stored / responses_max_age_days in kaiyuan.toml)",
            param=param,
        )
    return stored


def _result_response(base: rs.Response, result: Any, max_tool_calls: int | None) -> rs.Response:
    choice = result.choices[0]
    status, details = conv.finish_status(choice.finish_reason)
    return base.model_copy(
        update={
            "status": status,
            "incomplete_details": details,
            "output": conv.output_items(choice, max_tool_calls=max_tool_calls),
            "usage": conv.usage_out(result.usage),
        }
    )


# -- create --------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One response being produced: a single generation, or the MCP tool loop over several."""

    runtime: Runtime
    state: _Responses
    body: rs.ResponsesRequest
    native: ChatRequest
    base: rs.Response
    uses: list[McpUse]
    request: Request | None = None  # watched for a disconnect (not for background responses)

    async def _generate(self, native: ChatRequest) -> Any:
        running = await begin(self.runtime, native, conv.unset_sampling(self.body))
        self.base = self.base.model_copy(update={"model": running.model})
        self.state.running[self.base.id] = running
        try:
            return await running.collect(self.request)
        finally:
            self.state.running.pop(self.base.id, None)

    async def run(self) -> rs.Response:
        """The finished response (not stored)."""
        if not self.uses:
            result = await self._generate(self.native)
            return _result_response(self.base, result, self.body.max_tool_calls)
        loop = await run_tool_loop(_hub(self.runtime, self.state), self.native, self.uses, self._generate)
        items: list[dict[str, Any]] = []
        for step in loop.steps:
            if isinstance(step, ToolListing):
                items.append(conv.mcp_list_tools_item(step.server, step.tools))
            else:
                items.append(conv.mcp_call_item(step.server, step.call, step.output, step.is_error))
        choice = loop.result.choices[0]
        status, details = conv.finish_status(choice.finish_reason)
        output = items + conv.output_items(choice, max_tool_calls=self.body.max_tool_calls)
        usage = conv.usage_out(loop.usage)
        update = {"status": status, "incomplete_details": details, "output": output, "usage": usage}
        return self.base.model_copy(update=update)


def _hub(runtime: Runtime, state: _Responses) -> McpHub:
    if state.hub is None:
        state.hub = McpHub(mcp_settings(runtime.settings.mcp))
    return state.hub


@router.post(
    "/responses",
    response_model=rs.Response,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    summary="Create a model response (stream: true gives named server-sent events; background: true returns at once)",
)
async def create_response(body: rs.ResponsesRequest, request: Request) -> Response:
    state = _state(request)
    runtime = get_runtime(request)
    store = body.store is not False
    if body.background and not store:
        raise InvalidRequest("background responses must be stored; remove store: false", param="background")
    if body.background and body.stream:
        raise InvalidRequest(
            "background responses are polled (GET /v1/responses/{id}), not streamed; drop stream or background",
            param="stream",
        )
    uses = [McpUse(label, allowed) for label, allowed in conv.mcp_uses(body)]
    for use in uses:
        _hub(runtime, state).config(use.server, param="tools")
    context: list[dict[str, Any]] = []
    history: list[Message] = []
    if body.previous_response_id is not None:
        previous = await _stored(state, body.previous_response_id, "previous_response_id")
        if previous.response.get("status") in ("queued", "in_progress"):
            raise InvalidRequest(
                f"response {body.previous_response_id!r} is still {previous.response['status']}; wait for it",
                param="previous_response_id",
            )
        context = previous.conversation
        try:
            history = conv.items_to_messages(conv.parse_items(context), "previous_response_id")
        except ValueError as exc:
            raise InvalidRequest(
                f"the stored conversation cannot be read: {exc}", param="previous_response_id"
            ) from exc
    native = conv.request_to_native(body, history)
    items = conv.input_items(body)
    response_id = conv.new_item_id("resp")

    async def save(final: rs.Response) -> None:
        if store:
            await asyncio.to_thread(state.store.put, final.model_dump(mode="json"), items, context)

    if body.background:
        base = conv.response_object(body, id=response_id, model=native.model, status="queued")
        await asyncio.to_thread(state.store.put, base.model_dump(mode="json"), items, context)
        job = _Job(runtime, state, body, native, base, uses)
        task = asyncio.create_task(_run_background(state, job))
        state.tasks[response_id] = task
        task.add_done_callback(lambda _: state.tasks.pop(response_id, None))
        return _json(base)

    base = conv.response_object(body, id=response_id, model=native.model, status="in_progress")
    if uses or not native.stream:
        job = _Job(runtime, state, body, native, base, uses, request)
        if not native.stream:
            final = await job.run()
            await save(final)
            return _json(final)
        return _replayed_stream(job, save)

    running = await begin(runtime, native, conv.unset_sampling(body))
    base = base.model_copy(update={"model": running.model})
    encoder = conv.ResponseStreamEncoder(base, max_tool_calls=body.max_tool_calls)

    async def events() -> AsyncIterator[Any]:
        for event in encoder.start():
            yield event
        async for chunk in running.stream:
            for event in encoder.encode(chunk):
                yield event
        if encoder.final is not None:
            await save(encoder.final)

    return EventStreamResponse(named_sse(events(), _error_event(encoder)), on_close=running.close)


def _error_event(encoder: conv.ResponseStreamEncoder) -> Callable[[Exception], rs.ErrorEvent]:
    def on_error(exc: Exception) -> rs.ErrorEvent:
        if isinstance(exc, KaiyuanError):
            return encoder.error(exc.code, exc.message, exc.param)
        return encoder.error("internal_error", "internal error; the server log has the details", None)

    return on_error


def _replayed_stream(job: _Job, save: Callable[[rs.Response], Awaitable[None]]) -> EventStreamResponse:
    """The MCP tool loop streamed: the lifecycle start at once, then, when the loop is done, every output item
    in order with its events (the model's turns between tool calls are not streamed token by token)."""
    encoder = conv.ResponseStreamEncoder(job.base, max_tool_calls=job.body.max_tool_calls)

    async def events() -> AsyncIterator[Any]:
        for event in encoder.start():
            yield event
        final = await job.run()
        for event in encoder.replay(final):
            yield event
        if encoder.final is not None:
            await save(encoder.final)

    def on_close() -> None:
        running = job.state.running.get(job.base.id)
        if running is not None:
            running.close()

    return EventStreamResponse(named_sse(events(), _error_event(encoder)), on_close=on_close)


async def _run_background(state: _Responses, job: _Job) -> None:
    """Produce a background response to the end (or its cancellation), updating its stored row."""
    base = job.base
    final = base
    try:
        progress = base.model_copy(update={"status": "in_progress"})
        await asyncio.to_thread(state.store.update, progress.model_dump(mode="json"))
        job.base = progress
        final = await job.run()
        if base.id in state.cancelled:
            final = final.model_copy(update={"status": "cancelled", "incomplete_details": None})
    except asyncio.CancelledError:
        final = base.model_copy(update={"status": "cancelled"})
    except KaiyuanError as exc:
        final = base.model_copy(
            update={"status": "failed", "error": rs.ResponseError(code=exc.code, message=exc.message)}
        )
    except Exception:
        log.exception("background response %s failed", base.id)
        error = rs.ResponseError(
            code="server_error", message="internal error; the server log has the details"
        )
        final = base.model_copy(update={"status": "failed", "error": error})
    finally:
        state.cancelled.discard(base.id)
        await asyncio.to_thread(state.store.update, final.model_dump(mode="json"))


# -- stored responses ----------------------------------------------------------------------------------------


@router.get("/responses/{response_id}", response_model=rs.Response, summary="Retrieve a stored response")
async def get_response(response_id: str, request: Request) -> Response:
    stored = await _stored(_state(request), response_id)
    return _json(rs.Response.model_validate(stored.response))


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> Response:
    state = _state(request)
    await _stored(state, response_id)
    running = state.running.get(response_id)
    if running is not None:
        running.stream.cancel()
    await asyncio.to_thread(state.store.delete, response_id)
    deleted = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(json.dumps(deleted), media_type="application/json")


@router.post(
    "/responses/{response_id}/cancel", response_model=rs.Response, summary="Cancel a background response"
)
async def cancel_response(response_id: str, request: Request) -> Response:
    state = _state(request)
    stored = await _stored(state, response_id)
    if not stored.response.get("background"):
        raise InvalidRequest("only background responses can be cancelled", param="response_id")
    task = state.tasks.get(response_id)
    if task is not None:
        state.cancelled.add(response_id)
        running = state.running.get(response_id)
        if running is not None:
            running.stream.cancel()
        else:
            task.cancel()
        await asyncio.wait({task})
        stored = await _stored(state, response_id)
    return _json(rs.Response.model_validate(stored.response))


@router.get("/responses/{response_id}/input_items", summary="List the input items of a stored response")
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    stored = await _stored(_state(request), response_id)
    items = list(stored.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"no input item {after!r} in response {response_id!r}", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return Response(
        json.dumps(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        ),
        media_type="application/json",
    )
