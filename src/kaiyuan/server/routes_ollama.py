"""The Ollama skin: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``, ``/api/tags``,
``/api/show``, ``/api/ps``, ``/api/pull``, ``/api/delete``, ``/api/copy``, ``/api/version`` and ``HEAD /``.

A second skin over the one native path: parse (pydantic, ``protocol/ollama.py``) → convert
(``protocol/convert_ollama.py``) → the chat layer (``start_chat_async`` / ``start_completion_async``) → convert back → one JSON
object or an NDJSON stream (``stream`` defaults to true). Owns what only this skin does: empty-prompt load and
unload requests, ``keep_alive`` (``_keep_alive.py``), ``num_ctx`` as a per-request context window, the model's
default options, Ollama's nanosecond timings, and pulls with a progress stream. Errors are
``{"error": "..."}`` with Ollama's status codes (``_ndjson.py``). Must not know llama.cpp or prompt rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kaiyuan import __version__
from kaiyuan.chat import (
    ChatModel,
    ChatStream,
    ChatTemplate,
    ContextLimit,
    collect_stream,
    start_chat_async,
    start_completion_async,
)
from kaiyuan.errors import InvalidRequest
from kaiyuan.gguf import ArrayInfo, read_gguf
from kaiyuan.protocol import convert_ollama as conv
from kaiyuan.protocol import ollama as ol
from kaiyuan.server._http import run_watching_disconnect
from kaiyuan.server._keep_alive import KeepAlive
from kaiyuan.server._models import ModelLease
from kaiyuan.server._ndjson import NDJSONResponse, OllamaRoute, json_response, ndjson_lines
from kaiyuan.server._runtime import Runtime, get_runtime
from kaiyuan.store import Manifest, read_chat_template, read_folder_config
from kaiyuan.types import ChatRequest, CompletionRequest, ModelInfo

__all__ = ["router"]

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ol.ErrorResponse, "description": text}
    for status, text in (
        (400, "Invalid request"),
        (401, "Missing or wrong API key"),
        (403, "The license policy forbids this model"),
        (404, "Unknown model (or, for a pull, unknown on the hub)"),
        (409, "Pull: another model already has that name"),
        (502, "Pull: the hub failed (network, digest mismatch)"),
        (503, "Overloaded; retry after Retry-After seconds"),
    )
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/x-ndjson": {"schema": {"type": "string", "description": "stream: true (default)"}}
        }
    }
}

router = APIRouter(tags=["ollama"], responses=_ERRORS, route_class=OllamaRoute)


# -- shared helpers ------------------------------------------------------------------------------------------


def _keep_alive(request: Request) -> KeepAlive:
    state = request.app.state
    keeper = getattr(state, "ollama_keep_alive", None)
    if keeper is None:
        keeper = KeepAlive(get_runtime(request).models)
        state.ollama_keep_alive = keeper
    assert isinstance(keeper, KeepAlive)
    return keeper


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _context_limit(model: ChatModel, num_ctx: int | None) -> ContextLimit | None:
    """``num_ctx`` smaller than the loaded context: the chat layer refuses longer prompts and caps generation to
    fit in it (counted on the one render of the request). A larger one cannot grow a loaded model's context
    (``kaiyuan serve --ctx`` sets it): logged once."""
    if num_ctx is None:
        return None
    n_ctx = model.engine.n_ctx
    if num_ctx >= n_ctx:
        if num_ctx > n_ctx:
            ol.log_once(
                ("num_ctx", str(n_ctx)),
                "num_ctx %d is larger than the server's context window of %d tokens (kaiyuan serve --ctx); "
                "using %d (logged once)",
                num_ctx,
                n_ctx,
                n_ctx,
            )
        return None
    return ContextLimit(num_ctx, name="num_ctx", param="options.num_ctx")


class _Clock:
    """Wraps the metrics timer to also note when the first token came (Ollama's prompt/eval split)."""

    def __init__(self, timer: Any) -> None:
        self.timer = timer
        self.first: float | None = None

    def on_token(self, index: int) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.timer.on_token(index)


def _timings(start: float, loaded: float, clock: _Clock) -> conv.Timings:
    end = time.perf_counter()
    first = clock.first if clock.first is not None else end
    return conv.Timings(
        total=_ns(end - start),
        load=_ns(loaded - start),
        prompt_eval=_ns(first - loaded),
        eval=_ns(end - first),
    )


async def _load_or_unload(request: Request, model: str, keep: float | None) -> tuple[str, str]:
    """An empty request: load the model (``done_reason`` "load") or, with ``keep_alive`` 0, unload it ("unload")."""
    runtime = get_runtime(request)
    keeper = _keep_alive(request)
    canonical = await asyncio.to_thread(runtime.models.resolve, model)
    if keep == 0:
        keeper.forget(canonical)
        await runtime.models.unload(canonical)
        return canonical, "unload"
    lease = await runtime.models.acquire(canonical)
    lease.release()
    if keep is not None:
        keeper.set(lease.name, keep)
    return lease.name, "load"


def _check_think(lease: ModelLease, think: bool | str | None) -> None:
    if think not in (None, False) and not lease.model.dialect.has_reasoning:
        raise InvalidRequest(f'"{lease.name}" does not support thinking', param="think")


async def _run(
    request: Request,
    *,
    model: str,
    keep: float | None,
    think: bool | str | None,
    convert: Callable[..., tuple[ChatRequest | CompletionRequest, int | None]],
    encoder_type: type[conv.ChatEncoder] | type[conv.GenerateEncoder],
    logprobs: bool,
) -> Response:
    """The generation shared by chat and generate: lease, convert, start, then stream or collect."""
    runtime = get_runtime(request)
    keeper = _keep_alive(request)
    start = time.perf_counter()
    lease = await runtime.models.acquire(model)
    loaded = time.perf_counter()
    timer = runtime.metrics.timer(lease.name)
    clock = _Clock(timer)
    stream: ChatStream | None = None

    def finish() -> None:
        timer.finish(stream.usage if stream is not None else None)
        lease.release()
        if keep is not None:
            keeper.set(lease.name, keep)

    try:
        _check_think(lease, think)
        native, num_ctx = convert(model_options=lease.model.default_options)
        native.model = lease.name
        limit = _context_limit(lease.model, num_ctx)
        if isinstance(native, ChatRequest):
            stream = await start_chat_async(lease.model, native, observer=clock, context_limit=limit)
        else:
            stream = await start_completion_async(lease.model, native, observer=clock, context_limit=limit)
    except BaseException:
        finish()
        raise
    encoder = encoder_type(lease.name, logprobs)
    running = stream

    if native.stream:

        async def objects() -> AsyncIterator[Any]:
            async for chunk in running:
                for obj in encoder.encode(chunk):
                    yield obj
            yield encoder.final(_timings(start, loaded, clock))

        def on_close() -> None:
            running.cancel()
            finish()

        return NDJSONResponse(ndjson_lines(objects()), on_close=on_close)

    try:
        result = await run_watching_disconnect(request, collect_stream(running), running.cancel)
    finally:
        running.cancel()
        finish()
    return json_response(encoder.whole(result.choices[0], result.usage, _timings(start, loaded, clock)))


# -- chat and generate ---------------------------------------------------------------------------------------


@router.post(
    "/api/chat",
    response_model=ol.ChatResponse,
    responses=_STREAM_DOC,
    summary="Chat (NDJSON stream unless stream: false)",
)
async def chat(body: ol.ChatRequest, request: Request) -> Response:
    keep = conv.parse_keep_alive(body.keep_alive)
    if not body.messages:
        name, reason = await _load_or_unload(request, body.model, keep)
        return json_response(
            ol.ChatResponse(
                model=name,
                created_at=conv.created_at(),
                message=ol.MessageOut(),
                done=True,
                done_reason=reason,
            )
        )

    def convert(**kw: Any) -> tuple[ChatRequest | CompletionRequest, int | None]:
        return conv.chat_request_to_native(body, **kw)

    return await _run(
        request,
        model=body.model,
        keep=keep,
        think=body.think,
        convert=convert,
        encoder_type=conv.ChatEncoder,
        logprobs=bool(body.logprobs),
    )


@router.post(
    "/api/generate",
    response_model=ol.GenerateResponse,
    responses=_STREAM_DOC,
    summary="Complete a prompt (NDJSON stream unless stream: false)",
)
async def generate(body: ol.GenerateRequest, request: Request) -> Response:
    keep = conv.parse_keep_alive(body.keep_alive)
    if not body.prompt and not body.images and not body.suffix:
        name, reason = await _load_or_unload(request, body.model, keep)
        return json_response(
            ol.GenerateResponse(
                model=name, created_at=conv.created_at(), response="", done=True, done_reason=reason
            )
        )

    def convert(**kw: Any) -> tuple[ChatRequest | CompletionRequest, int | None]:
        return conv.generate_request_to_native(body, **kw)

    return await _run(
        request,
        model=body.model,
        keep=keep,
        think=None if body.raw else body.think,
        convert=convert,
        encoder_type=conv.GenerateEncoder,
        logprobs=bool(body.logprobs),
    )


# -- embeddings ----------------------------------------------------------------------------------------------


async def _embed_texts(
    request: Request, model: str, texts: list[str], keep: float | None
) -> tuple[str, list[list[float]], int, float, float]:
    """(canonical name, vectors, prompt tokens, start, loaded) for ``texts`` on ``model``."""
    runtime = get_runtime(request)
    start = time.perf_counter()
    lease = await runtime.models.acquire(model)
    loaded = time.perf_counter()
    try:
        engine = lease.model.engine

        def work() -> tuple[list[list[float]], int]:
            if not texts:
                return [], 0
            n_tokens = sum(len(engine.tokenize(t, add_special=True, parse_special=False)) for t in texts)
            return engine.embed(texts), n_tokens

        vectors, n_tokens = await asyncio.to_thread(work)
    finally:
        lease.release()
        if keep is not None:
            _keep_alive(request).set(lease.name, keep)
    return lease.name, vectors, n_tokens, start, loaded


@router.post("/api/embed", response_model=ol.EmbedResponse, summary="Embed one or more texts (L2-normalised)")
async def embed(body: ol.EmbedRequest, request: Request) -> Response:
    keep = conv.parse_keep_alive(body.keep_alive)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    texts = [t for t in texts if t] if isinstance(body.input, str) else texts
    if any(not t for t in texts):
        raise InvalidRequest("input strings must not be empty", param="input")
    if body.options is not None:
        ol.log_once(("embed", "options"), "options are ignored by /api/embed (logged once)")
    name, vectors, n_tokens, start, loaded = await _embed_texts(request, body.model, texts, keep)
    end = time.perf_counter()
    return json_response(
        ol.EmbedResponse(
            model=name,
            embeddings=conv.embedding_vectors(vectors, body.dimensions),
            total_duration=_ns(end - start),
            load_duration=_ns(loaded - start),
            prompt_eval_count=n_tokens,
        )
    )


@router.post("/api/embeddings", response_model=ol.EmbeddingResponse, summary="Embed one prompt (legacy)")
async def embeddings(body: ol.EmbeddingRequest, request: Request) -> Response:
    keep = conv.parse_keep_alive(body.keep_alive)
    texts = [body.prompt] if body.prompt else []
    _, vectors, _, _, _ = await _embed_texts(request, body.model, texts, keep)
    return json_response(ol.EmbeddingResponse(embedding=[float(v) for v in vectors[0]] if vectors else []))


# -- model listing -------------------------------------------------------------------------------------------


@router.get("/api/tags", response_model=ol.ListResponse, summary="List the models in the store")
async def tags(request: Request) -> Response:
    runtime = get_runtime(request)
    names = await asyncio.to_thread(runtime.store.names)  # aliases too: each name a client may ask for
    models = [conv.list_model(dataclasses.replace(m.to_model_info(), name=name)) for name, m in names]
    models.sort(key=lambda m: m.modified_at, reverse=True)  # Ollama lists the newest first
    return json_response(ol.ListResponse(models=models))


@router.get("/api/ps", response_model=ol.ProcessResponse, summary="List the models loaded now")
async def ps(request: Request) -> Response:
    runtime = get_runtime(request)
    keeper = _keep_alive(request)
    out = []
    for entry in runtime.models.loaded():
        engine = entry.model.engine
        info = entry.model.info or ModelInfo(name=entry.name, path=engine.model_path)
        expires_at = keeper.expires_at(entry)
        for name in [info.name, *runtime.store.aliases_of(info.name)]:  # each name a client may use
            listed = dataclasses.replace(info, name=name)
            out.append(conv.process_model(listed, expires_at=expires_at, context_length=engine.n_ctx))
    return json_response(ol.ProcessResponse(models=out))


def _plain(value: Any, verbose: bool) -> Any:
    if isinstance(value, ArrayInfo):
        return []
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and not verbose and len(value) > 64:
        return []
    return value


def _license_text(manifest: Manifest) -> str | None:
    record = manifest.license
    text = record.get("text")
    if isinstance(text, str) and text:
        return text
    parts = [record.get(k) for k in ("id", "name", "link")]
    lines = [p for p in parts if isinstance(p, str) and p]
    return "\n".join(dict.fromkeys(lines)) or None


def _modelfile(manifest: Manifest, system: str | None, parameters: dict[str, Any]) -> str:
    lines = [
        "# Modelfile generated by kaiyuan (/api/show)",
        f"# FROM {manifest.full_name}",
        "# The chat template is the model file's own (Jinja), shown in 'template'; kaiyuan does not use Go templates.",
        "",
        f"FROM {manifest.model_path}",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER {key} {text}" for key, text in conv.parameter_lines(parameters)]
    return "\n".join(lines) + "\n"


def _show(runtime: Runtime, name: str, verbose: bool) -> ol.ShowResponse:
    manifest = runtime.store.resolve(name)
    info = manifest.to_model_info()
    if manifest.is_folder:  # a Hugging Face folder: its config.json, keyed the way GGUF metadata is
        config = read_folder_config(manifest.model_path)
        model_info = {f"{manifest.architecture}.{k}": _plain(v, verbose) for k, v in config.items()}
        model_info["general.architecture"] = manifest.architecture
    else:
        gguf = read_gguf(manifest.model_path, load_arrays=verbose)
        model_info = {
            k: _plain(v, verbose) for k, v in gguf.metadata.items() if k != "tokenizer.chat_template"
        }
    model_info["general.parameter_count"] = manifest.parameters
    template = read_chat_template(manifest)
    capabilities = ["completion"]
    chat_template = ChatTemplate(template)
    if "tools" in chat_template.source:
        capabilities.append("tools")
    if chat_template.dialect.has_reasoning:
        capabilities.append("thinking")
    system = manifest.system or None
    parameters = manifest.parameters_defaults
    return ol.ShowResponse(
        license=_license_text(manifest),
        modelfile=_modelfile(manifest, system, parameters),
        parameters=conv.format_parameters(parameters),
        template=template,
        system=system,
        details=conv.model_details(info),
        model_info=model_info,
        capabilities=capabilities,
        modified_at=conv.iso_time(info.created),
    )


@router.post(
    "/api/show", response_model=ol.ShowResponse, summary="Show a model's details, template and license"
)
async def show(body: ol.ShowRequest, request: Request) -> Response:
    runtime = get_runtime(request)
    assert body.model is not None
    return json_response(await asyncio.to_thread(_show, runtime, body.model, bool(body.verbose)))


# -- model management ----------------------------------------------------------------------------------------


@router.delete("/api/delete", summary="Delete a model (and unload it)")
async def delete(body: ol.DeleteRequest, request: Request) -> Response:
    runtime = get_runtime(request)
    assert body.model is not None
    manifest = await asyncio.to_thread(runtime.store.remove, body.model)
    _keep_alive(request).forget(manifest.full_name)
    await runtime.models.unload(manifest.full_name)
    return Response(status_code=200)


@router.post("/api/copy", summary="Copy a model to a new name (no data is duplicated)")
async def copy(body: ol.CopyRequest, request: Request) -> Response:
    runtime = get_runtime(request)
    await asyncio.to_thread(runtime.store.copy, body.source, body.destination, overwrite=True)
    return Response(status_code=200)


def _progress(event: Any) -> ol.ProgressResponse:
    return ol.ProgressResponse(
        status=event.status, digest=event.digest, total=event.total, completed=event.completed
    )


@router.post(
    "/api/pull",
    response_model=ol.ProgressResponse,
    responses=_STREAM_DOC,
    summary="Pull a model from an Ollama registry, Hugging Face or ModelScope (progress stream)",
)
async def pull(body: ol.PullRequest, request: Request) -> Response:
    from kaiyuan.store.pull import parse_ref, pull_model

    runtime = get_runtime(request)
    assert body.model is not None
    parse_ref(body.model)  # a bad reference is a 400 before anything streams
    if body.insecure:
        ol.log_once(
            ("pull", "insecure"), "'insecure' is ignored by /api/pull: the registry URL decides (logged once)"
        )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def listener(event: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def work() -> Any:
        return pull_model(body.model or "", runtime.store, runtime.settings, listener=listener, cancel=cancel)

    task = asyncio.ensure_future(asyncio.to_thread(work))

    if body.stream is False:
        try:
            await run_watching_disconnect(request, task, cancel.set)
        finally:
            if not task.done():
                cancel.set()
        return json_response(ol.ProgressResponse(status="success"))

    async def objects() -> AsyncIterator[ol.ProgressResponse]:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield _progress(getter.result())
                continue
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
            while not events.empty():
                yield _progress(events.get_nowait())
            task.result()  # raises the pull's error: ndjson_lines writes it as {"error": ...}
            return

    def on_close() -> None:
        if not task.done():
            log.info(
                "pull of %s: the client went away; cancelling (the download resumes next time)", body.model
            )
            cancel.set()

    return NDJSONResponse(ndjson_lines(objects()), on_close=on_close)


# -- version and liveness ------------------------------------------------------------------------------------


@router.get(
    "/api/version", response_model=ol.VersionResponse, summary="The Ollama API version kaiyuan speaks"
)
async def version() -> Response:
    return json_response(ol.VersionResponse(version=conv.OLLAMA_API_VERSION, kaiyuan=__version__))


@router.head("/", include_in_schema=False)
async def head_root() -> Response:
    """Ollama clients probe ``HEAD /``; ``GET /`` stays the web chat."""
    return Response(status_code=200)
