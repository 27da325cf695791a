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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from kaiyuan.errors import InvalidRequest, KaiyuanError, ResponseNotFound
from kaiyuan.protocol import convert_responses as conv
from kaiyuan.protocol import openai as oa
from kaiyuan.protocol import responses as rs
from kaiyuan.server._generation import Running, begin, named_sse
from kaiyuan.server._http import EventStreamResponse
from kaiyuan.server._response_store import ResponseStore, StoredResponse
from kaiyuan.server._runtime import Runtime, get_runtime
from kaiyuan.types import ChatRequest, Message

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["responses"],
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


@router.post(
    "/responses",
    response_model=rs.Response,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    summary="Create a model response (stream: true gives named server-sent events; background: true returns at once)",
)
async def create_response(body: rs.ResponsesRequest, request: Request) -> Response:
    state = _state(request)
    store = body.store is not False
    if body.background and not store:
        raise InvalidRequest("background responses must be stored; remove store: false", param="background")
    if body.background and body.stream:
        raise InvalidRequest(
            "background responses are polled (GET /v1/responses/{id}), not streamed; drop stream or background",
            param="stream",
        )
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
    runtime = get_runtime(request)
    response_id = conv.new_item_id("resp")

    if body.background:
        base = conv.response_object(body, id=response_id, model=native.model, status="queued")
        await asyncio.to_thread(state.store.put, base.model_dump(mode="json"), items, context)
        task = asyncio.create_task(_run_background(runtime, state, body, native, base))
        state.tasks[response_id] = task
        task.add_done_callback(lambda _: state.tasks.pop(response_id, None))
        return _json(base)

    running = await begin(runtime, native, conv.unset_sampling(body))
    base = conv.response_object(body, id=response_id, model=running.model, status="in_progress")

    async def save(final: rs.Response) -> None:
        if store:
            await asyncio.to_thread(state.store.put, final.model_dump(mode="json"), items, context)

    if not native.stream:
        result = await running.collect(request)
        final = _result_response(base, result, body.max_tool_calls)
        await save(final)
        return _json(final)

    encoder = conv.ResponseStreamEncoder(base, max_tool_calls=body.max_tool_calls)

    async def events() -> AsyncIterator[Any]:
        for event in encoder.start():
            yield event
        async for chunk in running.stream:
            for event in encoder.encode(chunk):
                yield event
        if encoder.final is not None:
            await save(encoder.final)

    def on_error(exc: Exception) -> rs.ErrorEvent:
        if isinstance(exc, KaiyuanError):
            return encoder.error(exc.code, exc.message, exc.param)
        return encoder.error("internal_error", "internal error; the server log has the details", None)

    return EventStreamResponse(named_sse(events(), on_error), on_close=running.close)


async def _run_background(
    runtime: Runtime, state: _Responses, body: rs.ResponsesRequest, native: ChatRequest, base: rs.Response
) -> None:
    """Generate a background response to the end (or its cancellation), updating its stored row."""
    final = base
    try:
        running = await begin(runtime, native, conv.unset_sampling(body))
        state.running[base.id] = running
        try:
            progress = base.model_copy(update={"status": "in_progress", "model": running.model})
            await asyncio.to_thread(state.store.update, progress.model_dump(mode="json"))
            result = await running.collect()
        finally:
            state.running.pop(base.id, None)
        final = _result_response(progress, result, body.max_tool_calls)
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
