"""The OpenAI skin: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Routes are thin: parse (pydantic) → convert to native → the chat layer (``start_chat`` / ``start_completion``)
→ convert back → JSON or SSE. Errors go through the one table in ``_errors.py``. Must not know llama.cpp or
how messages become prompts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kaiyuan.chat import ChatResult, ChatStream, start_chat_async, start_completion_async
from kaiyuan.errors import InvalidRequest, KaiyuanError, ModelNotFound
from kaiyuan.license import license_summary
from kaiyuan.protocol import convert_openai, convert_shared
from kaiyuan.protocol import openai as oa
from kaiyuan.server._errors import ApiRoute
from kaiyuan.server._generation import begin
from kaiyuan.server._http import EventStreamResponse, sse_events
from kaiyuan.server._runtime import Runtime, get_runtime
from kaiyuan.store import Manifest
from kaiyuan.types import ChatRequest, CompletionRequest

__all__ = ["router"]

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": oa.ErrorResponse, "description": text}
    for status, text in (
        (400, "Invalid request (the error names the param)"),
        (401, "Missing or wrong API key"),
        (403, "The license policy forbids this model"),
        (404, "Unknown model"),
        (429, "Queue full; retry after Retry-After seconds"),
        (503, "Overloaded; retry after Retry-After seconds"),
    )
}

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {"schema": {"type": "string", "description": "SSE with stream: true"}}
        }
    }
}

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS, route_class=ApiRoute)


def _json(obj: Any) -> Response:
    return Response(obj.model_dump_json(exclude_unset=True), media_type="application/json")


# -- models --------------------------------------------------------------------------------------------------


def _license_of(manifest: Manifest) -> dict[str, Any] | None:
    """The license package's summary (effective terms, openness); None falls back to the manifest's record."""
    try:
        return license_summary(manifest.to_dict())
    except KaiyuanError as exc:  # a listing must not fail on one model's odd license data
        log.warning("license summary of %s failed: %s", manifest.full_name, exc.message)
        return None


def _openai_ids(name: str) -> list[str]:
    """The ids a ``name:tag`` is listed under: OpenAI clients do not normalise ``mine`` to ``mine:latest`` the
    way Ollama clients do, so a ``:latest`` name is listed bare as well."""
    return [name, name.removesuffix(":latest")] if name.endswith(":latest") else [name]


def _model_objects(runtime: Runtime) -> list[oa.ModelObject]:
    out = []
    licenses: dict[str, dict[str, Any] | None] = {}
    for name, manifest in runtime.store.names():
        info = manifest.to_model_info()
        if info.name not in licenses:
            licenses[info.name] = _license_of(manifest)
        loaded = runtime.models.is_loaded(info.name)
        for model_id in _openai_ids(name):
            out.append(
                convert_openai.model_object(
                    info, loaded=loaded, license=licenses[info.name], listed_as=model_id
                )
            )
    return out


@router.get("/models", response_model=oa.ModelList, summary="List the models in the store")
async def list_models(request: Request) -> Response:
    runtime = get_runtime(request)
    data = await asyncio.to_thread(_model_objects, runtime)
    return _json(oa.ModelList(data=data))


@router.get("/models/{model_id:path}", response_model=oa.ModelObject, summary="Describe one model")
async def get_model(model_id: str, request: Request) -> Response:
    runtime = get_runtime(request)

    def find() -> oa.ModelObject:
        try:
            manifest = runtime.store.resolve(model_id)
        except InvalidRequest as exc:  # not even a valid name: for a path lookup that is simply "not found"
            raise ModelNotFound(f"no model {model_id!r}: {exc.message}", param="model_id") from exc
        except ModelNotFound as exc:
            exc.param = "model_id"
            raise
        info = manifest.to_model_info()
        return convert_openai.model_object(  # the id asked for (an alias says whose it is), as in the listing
            info,
            loaded=runtime.models.is_loaded(info.name),
            license=_license_of(manifest),
            listed_as=model_id,
        )

    return _json(await asyncio.to_thread(find))


# -- generation helpers --------------------------------------------------------------------------------------


# An encoder turns one native chunk into the wire objects of one SSE event each.
_Encode = Callable[[Any], list[Any]]
_Native = ChatRequest | CompletionRequest


async def _generate(
    request: Request,
    body: Any,
    native: _Native,
    *,
    id_prefix: str,
    start: Callable[..., Awaitable[ChatStream]],
    stream_encoder: Callable[[str, str, int], _Encode] | None,
    respond: Callable[[str, str, int, ChatResult], Any],
) -> Response:
    """The one way a generation is served: lease the model, fill what ``body`` left unset from the model's
    default options, start the stream (``start_chat_async`` / ``start_completion_async``: preparing the request
    runs off the event loop; errors still become statuses),
    then either stream it as SSE (``stream_encoder`` given) or collect it and answer with ``respond``. Metrics,
    the lease and the engine slots are released on every path, also when the client goes away."""
    running = await begin(get_runtime(request), native, convert_openai.unset_sampling(body), start)
    created = int(time.time())
    request_id = convert_shared.new_id(id_prefix)
    if stream_encoder is not None:
        encode = stream_encoder(request_id, running.model, created)

        async def objects() -> AsyncIterator[Any]:
            async for chunk in running.stream:
                for obj in encode(chunk):
                    yield obj

        return EventStreamResponse(sse_events(objects()), on_close=running.close)
    result = await running.collect(request)
    return _json(respond(request_id, running.model, created, result))


# -- chat ----------------------------------------------------------------------------------------------------


@router.post(
    "/chat/completions",
    response_model=oa.ChatCompletion,
    responses=_STREAM_DOC,
    summary="Create a chat completion (stream: true gives server-sent events)",
)
async def chat_completions(body: oa.ChatCompletionRequest, request: Request) -> Response:
    native = convert_openai.chat_request_to_native(body)
    reasoning_field = get_runtime(request).settings.reasoning_field
    logprobs = native.sampling.logprobs

    def stream_encoder(request_id: str, model: str, created: int) -> _Encode:
        return convert_openai.ChatStreamEncoder(
            id=request_id,
            model=model,
            created=created,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            logprobs=logprobs,
            reasoning_field=reasoning_field,
        ).encode

    def respond(request_id: str, model: str, created: int, result: ChatResult) -> Any:
        return convert_openai.chat_completion_from_native(
            id=request_id,
            created=created,
            model=model,
            choices=result.choices,
            usage=result.usage,
            logprobs=logprobs,
            reasoning_field=reasoning_field,
        )

    return await _generate(
        request,
        body,
        native,
        id_prefix="chatcmpl",
        start=start_chat_async,
        stream_encoder=stream_encoder if native.stream else None,
        respond=respond,
    )


# -- legacy completions --------------------------------------------------------------------------------------


@router.post(
    "/completions",
    response_model=oa.CompletionResponse,
    responses=_STREAM_DOC,
    summary="Create a completion of a raw prompt (legacy API)",
)
async def completions(body: oa.CompletionRequest, request: Request) -> Response:
    native = convert_openai.completion_request_to_native(body)
    logprobs = native.sampling.logprobs

    def stream_encoder(request_id: str, model: str, created: int) -> _Encode:
        return convert_openai.CompletionStreamEncoder(
            id=request_id,
            model=model,
            created=created,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            logprobs=logprobs,
        ).encode

    def respond(request_id: str, model: str, created: int, result: ChatResult) -> Any:
        return convert_openai.completion_from_native(
            id=request_id,
            created=created,
            model=model,
            choices=result.choices,
            usage=result.usage,
            logprobs=logprobs,
        )

    return await _generate(
        request,
        body,
        native,
        id_prefix="cmpl",
        start=start_completion_async,
        stream_encoder=stream_encoder if native.stream else None,
        respond=respond,
    )


# -- embeddings ----------------------------------------------------------------------------------------------


@router.post(
    "/embeddings", response_model=oa.EmbeddingResponse, summary="Embed texts with the model (pooled)"
)
async def embeddings(body: oa.EmbeddingRequest, request: Request) -> Response:
    runtime = get_runtime(request)
    texts = convert_openai.embedding_inputs(body)
    lease = await runtime.models.acquire(body.model)
    try:
        engine = lease.model.engine

        def work() -> tuple[list[list[float]], int]:
            n_tokens = sum(len(engine.tokenize(t, add_special=True, parse_special=False)) for t in texts)
            return engine.embed(texts), n_tokens

        vectors, n_tokens = await asyncio.to_thread(work)
    finally:
        lease.release()
    return _json(
        convert_openai.embedding_response(
            model=lease.name,
            vectors=vectors,
            prompt_tokens=n_tokens,
            encoding_format=body.encoding_format,
            dimensions=body.dimensions,
        )
    )
