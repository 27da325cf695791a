"""The Anthropic skin: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Routes are thin: parse (pydantic) → ``convert_anthropic`` → the native chat path (``_generation.begin``) →
convert back → JSON or named-event SSE (``message_start`` … ``message_stop``, a ``ping`` after the start and
whenever the model is silent for a while, e.g. during a long prefill). Every error on these routes, validation
included, answers in Anthropic's envelope ``{"type": "error", "error": {"type", "message"}}`` with the status
of the one table in ``_errors.py``. ``anthropic-version`` / ``anthropic-beta`` headers and ``?beta=true`` are
accepted and change nothing. Must not know llama.cpp or how messages become prompts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kaiyuan.chat import render_prompt
from kaiyuan.errors import KaiyuanError
from kaiyuan.protocol import anthropic as an
from kaiyuan.protocol import convert_anthropic as conv
from kaiyuan.server._errors import SkinRoute
from kaiyuan.server._generation import begin, named_sse, with_keepalive
from kaiyuan.server._http import EventStreamResponse
from kaiyuan.server._runtime import get_runtime

__all__ = ["PING_EVERY_S", "anthropic_error", "router"]

log = logging.getLogger(__name__)

PING_EVERY_S = (
    5.0  # a ping when the model has been silent this long (seconds), so proxies keep the stream open
)


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = conv.error_response(status, message).model_dump_json()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class _AnthropicRoute(SkinRoute):
    """Answers errors in Anthropic's envelope instead of the app-wide OpenAI one."""

    envelope = staticmethod(anthropic_error)


router = APIRouter(
    prefix="/v1",
    tags=["anthropic"],
    route_class=_AnthropicRoute,
    responses={
        status: {"model": an.ErrorResponse, "description": text}
        for status, text in (
            (400, "Invalid request"),
            (401, "Missing or wrong API key (x-api-key or Authorization: Bearer)"),
            (403, "The license policy forbids this model"),
            (404, "Unknown model"),
            (429, "Queue full; retry after Retry-After seconds"),
        )
    },
)


def _json(obj: Any) -> Response:
    return Response(obj.model_dump_json(), media_type="application/json")


@router.post(
    "/messages",
    response_model=an.Message,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    summary="Create a message (Anthropic Messages API; stream: true gives named server-sent events)",
)
async def create_message(body: an.MessagesRequest, request: Request) -> Response:
    native = conv.messages_request_to_native(body)
    running = await begin(get_runtime(request), native, conv.unset_sampling(body))
    message_id = conv.new_message_id()
    if not native.stream:
        result = await running.collect(request)
        choice = result.choices[0]
        return _json(
            conv.message_from_native(id=message_id, model=running.model, choice=choice, usage=result.usage)
        )

    encoder = conv.MessageStreamEncoder(id=message_id, model=running.model)

    async def encoded() -> AsyncIterator[Any]:
        async for chunk in running.stream:
            for event in encoder.encode(chunk):
                yield event

    async def events() -> AsyncIterator[Any]:
        for event in encoder.start(running.stream.prompt_tokens):
            yield event
        yield an.PingEvent()
        async for event in with_keepalive(encoded(), an.PingEvent, PING_EVERY_S):
            yield event

    def on_error(exc: Exception) -> an.ErrorResponse:
        if isinstance(exc, KaiyuanError):
            return conv.error_response(int(exc.http_status), exc.message)
        return conv.error_response(500, "internal error; the server log has the details")

    return EventStreamResponse(named_sse(events(), on_error), on_close=running.close)


@router.post(
    "/messages/count_tokens",
    response_model=an.CountTokensResponse,
    summary="Count the input tokens of a Messages request (the prompt the model would see)",
)
async def count_tokens(body: an.CountTokensRequest, request: Request) -> Response:
    native = conv.messages_request_to_native(body)
    lease = await get_runtime(request).models.acquire(native.model)
    try:
        model = lease.model

        def count() -> int:
            prompt = render_prompt(model, native)
            return len(model.engine.tokenize(prompt, add_special=False, parse_special=True))

        n_tokens = await asyncio.to_thread(count)
    finally:
        lease.release()
    return _json(an.CountTokensResponse(input_tokens=n_tokens))
