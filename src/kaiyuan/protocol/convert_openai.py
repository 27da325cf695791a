"""The OpenAI skin's translation layer: OpenAI wire models ↔ kaiyuan's native types.

Owns: OpenAI request objects → ``kaiyuan.types`` (``ChatRequest``, ``CompletionRequest``, ``SamplingParams``,
``Message``), native results and ``Chunk`` streams → OpenAI response and chunk objects, and the error envelope.
Everything here converts typed objects into typed objects; JSON bytes are the server's business. Requests that
are well-formed JSON but ask for something kaiyuan does not do raise ``InvalidRequest`` / ``UnsupportedFeature``
naming the ``param``, never a silent downgrade.

Must not know the engine, the chat layer, HTTP or the store (protocol → leaf + pydantic only): native results are
read through the small structural ``NativeChoice`` protocol (``convert_shared.py``, with what the other skins'
converters share). Layout: helpers first (``flatten_text``, ``sampling_from``, ``native_tool_calls``), then one
section per OpenAI API.
"""

from __future__ import annotations

import base64
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import InvalidRequest, KaiyuanError, UnsupportedFeature
from kaiyuan.protocol import openai as oa
from kaiyuan.protocol._json_depth import check_text_depth
from kaiyuan.protocol.convert_shared import NativeChoice, logprob_entries
from kaiyuan.types import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    Message,
    ModelInfo,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    Usage,
)

__all__ = [
    "ChatStreamEncoder",
    "CompletionStreamEncoder",
    "chat_completion_from_native",
    "chat_request_to_native",
    "completion_from_native",
    "completion_request_to_native",
    "embedding_inputs",
    "embedding_response",
    "error_response",
    "flatten_text",
    "model_object",
    "native_tool_calls",
    "sampling_from",
    "usage_to_openai",
]

log = logging.getLogger(__name__)

# OpenAI fields kaiyuan accepts but that change nothing here; each is logged once when a client sends it.
_IGNORED_FIELDS = (
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "store",
    "user",
    "verbosity",
)
_logged_ignored: set[str] = set()


def _log_ignored(req: Any) -> None:
    for name in _IGNORED_FIELDS:
        if getattr(req, name, None) is not None and name not in _logged_ignored:
            _logged_ignored.add(name)
            log.info("accepting %r but it has no effect in kaiyuan (logged once)", name)
    options = getattr(req, "stream_options", None)
    if options is not None and options.include_obfuscation and "include_obfuscation" not in _logged_ignored:
        _logged_ignored.add("include_obfuscation")
        log.info(
            "accepting 'stream_options.include_obfuscation' but kaiyuan does not obfuscate (logged once)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers (also for other skins)
# ---------------------------------------------------------------------------------------------------------------


def flatten_text(content: str | Sequence[Any] | None, param: str) -> str | None:
    """Join text parts into one string. Image, audio and file parts are rejected: kaiyuan's models have no vision
    or audio input, and dropping the part silently would answer a question the user did not ask."""
    if content is None or isinstance(content, str):
        return content
    texts: list[str] = []
    for i, part in enumerate(content):
        kind = getattr(part, "type", None)
        if kind == "text":
            texts.append(part.text)
        elif kind == "refusal":
            texts.append(part.refusal)
        elif kind == "image_url":
            raise UnsupportedFeature(
                "this model has no vision: image content parts are not supported; send text only",
                param=f"{param}[{i}]",
            )
        else:
            raise UnsupportedFeature(
                f"content parts of type {kind!r} are not supported (text only); send text parts",
                param=f"{param}[{i}]",
            )
    return "".join(texts)


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 16:
        raise InvalidRequest(f"at most 16 stop sequences are supported, got {len(stops)}", param="stop")
    return [s for s in stops if s]


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    result: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias keys must be token ids (integers as strings), got {key!r}", param="logit_bias"
            ) from None
        if token < 0:
            raise InvalidRequest(f"logit_bias token id must be >= 0, got {token}", param="logit_bias")
        if not -100.0 <= value <= 100.0:
            raise InvalidRequest(f"logit_bias values must lie in -100..100, got {value}", param="logit_bias")
        result[token] = float(value)
    return result


def sampling_from(req: Any, *, max_tokens: int | None, logprobs: bool, top_logprobs: int) -> SamplingParams:
    """Native sampling settings from any request object with OpenAI-named fields (``None`` = default)."""
    defaults = SamplingParams()
    return SamplingParams(
        temperature=_pick(req.temperature, defaults.temperature),
        top_p=_pick(req.top_p, defaults.top_p),
        top_k=_pick(getattr(req, "top_k", None), defaults.top_k),
        min_p=_pick(getattr(req, "min_p", None), defaults.min_p),
        max_tokens=max_tokens,
        stop=_stop_list(req.stop),
        seed=req.seed,
        presence_penalty=_pick(req.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(req.frequency_penalty, defaults.frequency_penalty),
        repetition_penalty=_pick(getattr(req, "repetition_penalty", None), defaults.repetition_penalty),
        logit_bias=_logit_bias(req.logit_bias),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


# SamplingParams fields an OpenAI request sets under the same name (None when the client left them out)
_REQUEST_SAMPLING_FIELDS = (
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "seed", "stop",
)  # fmt: skip


def unset_sampling(req: Any) -> set[str]:
    """The SamplingParams fields an OpenAI request left out (or sent as null): where the model's own defaults
    apply. Fields with a default in the API itself (legacy completions' ``max_tokens`` of 16) count as unset
    unless the client sent them."""
    sent = {name for name in req.model_fields_set if getattr(req, name) is not None}
    unset = {name for name in _REQUEST_SAMPLING_FIELDS if name not in sent}
    if not {"max_tokens", "max_completion_tokens"} & sent:
        unset.add("max_tokens")
    return unset


def native_tool_calls(calls: Sequence[oa.ToolCall] | None, param: str = "messages") -> list[ToolCall]:
    for i, c in enumerate(calls or []):
        check_text_depth(c.function.arguments, what="tool call arguments", param=f"{param}.tool_calls[{i}]")
    return [ToolCall(name=c.function.name, arguments=c.function.arguments, id=c.id) for c in calls or []]


def usage_to_openai(usage: Usage) -> oa.CompletionUsage:
    return oa.CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=usage.cached_tokens),
        completion_tokens_details=oa.CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )


def error_response(exc: KaiyuanError) -> oa.ErrorResponse:
    """The OpenAI error envelope for an error of kaiyuan's tree."""
    return oa.ErrorResponse(
        error=oa.ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
    )


# ---------------------------------------------------------------------------------------------------------------
# Chat completions: request
# ---------------------------------------------------------------------------------------------------------------

_REJECTED_CHAT_FIELDS = {
    "audio": "audio output is not supported; remove 'audio'",
    "functions": "the deprecated 'functions' field is not supported; send 'tools' instead",
    "function_call": "the deprecated 'function_call' field is not supported; send 'tool_choice' instead",
    "web_search_options": "web search is not supported; remove 'web_search_options'",
    "prediction": "predicted outputs are not supported; remove 'prediction'",
}


def chat_request_to_native(req: oa.ChatCompletionRequest) -> ChatRequest:
    """An OpenAI chat request as kaiyuan's ``ChatRequest``; raises ``InvalidRequest`` naming the bad param."""
    for name, reason in _REJECTED_CHAT_FIELDS.items():
        if getattr(req, name) is not None:
            raise UnsupportedFeature(reason, param=name)
    if req.modalities is not None and any(m != "text" for m in req.modalities):
        raise UnsupportedFeature("only the 'text' modality is supported", param="modalities")
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    _log_ignored(req)

    messages = [_native_message(m, f"messages[{i}]") for i, m in enumerate(req.messages)]
    tools = [t.model_dump(mode="json", exclude_none=True) for t in req.tools or []]
    tool_choice: str | dict[str, Any] | None
    if isinstance(req.tool_choice, oa.NamedToolChoice):
        name = req.tool_choice.function.name
        if name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not in tools", param="tool_choice"
            )
        tool_choice = {"type": "function", "function": {"name": name}}
    else:
        tool_choice = req.tool_choice
    if tool_choice == "required" and not tools:
        raise InvalidRequest("tool_choice 'required' needs at least one tool in tools", param="tool_choice")

    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    response_format = None
    if req.response_format is not None and req.response_format.type != "text":
        response_format = req.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ChatRequest(
        model=req.model,
        messages=messages,
        sampling=sampling_from(
            req, max_tokens=max_tokens, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0
        ),
        n=req.n or 1,
        stream=bool(req.stream),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=response_format,
        reasoning_effort=req.reasoning_effort,
        max_reasoning_tokens=req.max_reasoning_tokens,
        chat_template_kwargs=dict(req.chat_template_kwargs or {}),
        user=req.user,
    )


def _native_message(m: Any, param: str) -> Message:
    role = m.role
    if role == "function":
        raise UnsupportedFeature(
            "messages with the deprecated role 'function' are not supported; use 'tool'", param=param
        )
    if role == "assistant":
        if m.audio is not None:
            raise UnsupportedFeature("assistant audio is not supported", param=f"{param}.audio")
        return Message(
            role="assistant",
            content=flatten_text(m.content, f"{param}.content"),
            reasoning_content=m.reasoning_content if m.reasoning_content is not None else m.reasoning,
            tool_calls=native_tool_calls(m.tool_calls, param),
            name=m.name,
        )
    content = flatten_text(m.content, f"{param}.content")
    if role == "tool":
        return Message(role="tool", content=content, tool_call_id=m.tool_call_id)
    return Message(role=role, content=content, name=m.name)


# ---------------------------------------------------------------------------------------------------------------
# Chat completions: response and stream
# ---------------------------------------------------------------------------------------------------------------


def _logprobs_out(items: Sequence[TokenLogprob]) -> list[oa.TokenLogprob]:
    return logprob_entries(items, oa.TokenLogprob, oa.TopLogprob)


def _tool_calls_out(calls: Sequence[ToolCall]) -> list[oa.ToolCall]:
    return [
        oa.ToolCall(
            id=c.id, type="function", function=oa.ToolCallFunction(name=c.name, arguments=c.arguments)
        )
        for c in calls
    ]


def chat_completion_from_native(
    *,
    id: str,
    created: int,
    model: str,
    choices: Sequence[NativeChoice],
    usage: Usage,
    logprobs: bool,
    reasoning_field: str = "reasoning_content",
) -> oa.ChatCompletion:
    out = []
    for choice in choices:
        msg = choice.message
        message = oa.ChatMessageOut(role="assistant", content=msg.content, refusal=None)
        if msg.tool_calls:
            message.tool_calls = _tool_calls_out(msg.tool_calls)
        if msg.reasoning_content:
            setattr(message, reasoning_field, msg.reasoning_content)
        out.append(
            oa.Choice(
                index=choice.index,
                message=message,
                logprobs=oa.ChoiceLogprobs(content=_logprobs_out(choice.logprobs)) if logprobs else None,
                finish_reason=_finish(choice.finish_reason),
            )
        )
    return oa.ChatCompletion(id=id, created=created, model=model, choices=out, usage=usage_to_openai(usage))


def _finish(reason: str | None) -> Any:
    # "cancelled" never reaches a client that is still listening; map it to "stop" defensively.
    return "stop" if reason == "cancelled" else reason


@dataclass
class ChatStreamEncoder:
    """Turns native ``Chunk`` objects into OpenAI ``ChatCompletionChunk`` objects in OpenAI's exact order: the
    first chunk of each choice carries the role, content / reasoning / tool-call deltas follow, a chunk with an
    empty delta carries ``finish_reason``, and (when ``include_usage``) a last chunk with empty ``choices`` carries
    the usage while every other chunk has ``usage: null``."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False
    logprobs: bool = False
    reasoning_field: str = "reasoning_content"
    _started: set[int] = field(default_factory=set)

    def _chunk(self, choices: list[oa.ChunkChoice]) -> oa.ChatCompletionChunk:
        chunk = oa.ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices)
        if self.include_usage:
            chunk.usage = None
        return chunk

    def _choice(
        self, index: int, delta: oa.DeltaMessage, finish: str | None = None, lps: Any = None
    ) -> oa.ChunkChoice:
        return oa.ChunkChoice(index=index, delta=delta, logprobs=lps, finish_reason=_finish(finish))

    def encode(self, chunk: Chunk) -> list[oa.ChatCompletionChunk]:
        """The OpenAI chunks for one native chunk (zero, one or several)."""
        out: list[oa.ChatCompletionChunk] = []
        if chunk.usage is not None and chunk.finish_reason is None and not _has_payload(chunk):
            if self.include_usage:
                usage_chunk = oa.ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    usage=usage_to_openai(chunk.usage),
                )
                out.append(usage_chunk)
            return out
        i = chunk.index
        if i not in self._started:
            self._started.add(i)
            out.append(self._chunk([self._choice(i, oa.DeltaMessage(role="assistant", content=""))]))
        if _has_payload(chunk):
            delta = oa.DeltaMessage()
            if chunk.reasoning:
                setattr(delta, self.reasoning_field, chunk.reasoning)
            if chunk.content:
                delta.content = chunk.content
            if chunk.tool_calls:
                delta.tool_calls = [_delta_tool_call(tc) for tc in chunk.tool_calls]
            lps = (
                oa.ChoiceLogprobs(content=_logprobs_out(chunk.logprobs))
                if self.logprobs and chunk.logprobs
                else None
            )
            out.append(self._chunk([self._choice(i, delta, lps=lps)]))
        if chunk.finish_reason is not None:
            out.append(self._chunk([self._choice(i, oa.DeltaMessage(), finish=chunk.finish_reason)]))
        return out


def _delta_tool_call(tc: Any) -> oa.DeltaToolCall:
    """Only the keys OpenAI sends: id, type and name on a call's first delta, arguments fragments after."""
    function: dict[str, Any] = {"arguments": tc.arguments}
    if tc.name is not None:
        function = {"name": tc.name, "arguments": tc.arguments}
    fields: dict[str, Any] = {"index": tc.index}
    if tc.id is not None:
        fields.update(id=tc.id, type="function")
    fields["function"] = oa.DeltaToolCallFunction(**function)
    return oa.DeltaToolCall(**fields)


def _has_payload(chunk: Chunk) -> bool:
    return bool(chunk.content or chunk.reasoning or chunk.tool_calls or chunk.logprobs)


# ---------------------------------------------------------------------------------------------------------------
# Legacy completions
# ---------------------------------------------------------------------------------------------------------------


def completion_request_to_native(req: oa.CompletionRequest) -> CompletionRequest:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif prompt and all(isinstance(p, str) for p in prompt):
            raise UnsupportedFeature(
                "a list of several prompts is not supported; send one request per prompt", param="prompt"
            )
        else:
            raise UnsupportedFeature(
                "token-id prompts are not supported; send the prompt as text", param="prompt"
            )
    if req.suffix:
        raise UnsupportedFeature("suffix (fill-in-the-middle) is not supported", param="suffix")
    _log_ignored(req)
    n = req.n or 1
    if req.best_of is not None and req.best_of != n:
        raise UnsupportedFeature("best_of other than n is not supported", param="best_of")
    if req.echo and req.logprobs is not None:
        raise UnsupportedFeature(
            "logprobs of the prompt (echo with logprobs) are not supported", param="logprobs"
        )
    response_format = None
    if req.response_format is not None and req.response_format.type != "text":
        response_format = req.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)
    return CompletionRequest(
        model=req.model,
        prompt=prompt,
        sampling=sampling_from(
            req,
            max_tokens=req.max_tokens,
            logprobs=req.logprobs is not None,
            top_logprobs=req.logprobs or 0,
        ),
        n=n,
        stream=bool(req.stream),
        echo=bool(req.echo),
        response_format=response_format,
    )


def _completion_logprobs(items: Sequence[TokenLogprob], offset: int) -> oa.CompletionLogprobs:
    offsets = []
    for lp in items:
        offsets.append(offset)
        offset += len(lp.token)
    return oa.CompletionLogprobs(
        tokens=[lp.token for lp in items],
        token_logprobs=[lp.logprob for lp in items],
        top_logprobs=[dict(lp.top) for lp in items],
        text_offset=offsets,
    )


def completion_from_native(
    *,
    id: str,
    created: int,
    model: str,
    choices: Sequence[NativeChoice],
    usage: Usage,
    logprobs: bool,
    echo_len: int = 0,
) -> oa.CompletionResponse:
    out = [
        oa.CompletionChoice(
            text=choice.message.content or "",
            index=choice.index,
            logprobs=_completion_logprobs(choice.logprobs, echo_len) if logprobs else None,
            finish_reason=_finish(choice.finish_reason),
        )
        for choice in choices
    ]
    return oa.CompletionResponse(
        id=id, created=created, model=model, choices=out, usage=usage_to_openai(usage)
    )


@dataclass
class CompletionStreamEncoder:
    """Native ``Chunk`` objects as OpenAI ``text_completion`` stream objects (text deltas, a chunk with
    ``finish_reason``, the usage chunk when asked)."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False
    logprobs: bool = False
    _offsets: dict[int, int] = field(default_factory=dict)

    def _response(self, choices: list[oa.CompletionChoice]) -> oa.CompletionResponse:
        resp = oa.CompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices)
        if self.include_usage:
            resp.usage = None
        return resp

    def encode(self, chunk: Chunk) -> list[oa.CompletionResponse]:
        if chunk.usage is not None and chunk.finish_reason is None and not _has_payload(chunk):
            if not self.include_usage:
                return []
            return [
                oa.CompletionResponse(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    usage=usage_to_openai(chunk.usage),
                )
            ]
        out = []
        if chunk.content or chunk.logprobs:
            offset = self._offsets.get(chunk.index, 0)
            lps = _completion_logprobs(chunk.logprobs, offset) if self.logprobs else None
            self._offsets[chunk.index] = offset + len(chunk.content)
            out.append(
                self._response([oa.CompletionChoice(text=chunk.content, index=chunk.index, logprobs=lps)])
            )
        if chunk.finish_reason is not None:
            out.append(
                self._response(
                    [
                        oa.CompletionChoice(
                            text="", index=chunk.index, finish_reason=_finish(chunk.finish_reason)
                        )
                    ]
                )
            )
        return out


# ---------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------


def embedding_inputs(req: oa.EmbeddingRequest) -> list[str]:
    """The texts to embed. Token-id inputs are rejected: they would be ids of another tokenizer (clients such as
    LangChain tokenize with tiktoken), so reading them with this model's vocabulary would embed nonsense."""
    _log_ignored(req)
    data = req.input
    if isinstance(data, str):
        texts = [data]
    elif data and all(isinstance(x, str) for x in data):
        texts = [str(x) for x in data]
    elif not data:
        raise InvalidRequest("input must not be empty", param="input")
    else:
        raise UnsupportedFeature(
            "token-id inputs are not supported; send text (LangChain: check_embedding_ctx_length=False)",
            param="input",
        )
    if len(texts) > 2048:
        raise InvalidRequest(f"at most 2048 inputs per request, got {len(texts)}", param="input")
    if any(not t for t in texts):
        raise InvalidRequest("input strings must not be empty", param="input")
    return texts


def embedding_response(
    *,
    model: str,
    vectors: Sequence[Sequence[float]],
    prompt_tokens: int,
    encoding_format: str | None,
    dimensions: int | None,
) -> oa.EmbeddingResponse:
    if dimensions is not None and vectors and dimensions != len(vectors[0]):
        raise UnsupportedFeature(
            f"this model's embeddings have {len(vectors[0])} dimensions; other 'dimensions' are not supported",
            param="dimensions",
        )
    data = []
    for i, vec in enumerate(vectors):
        value: list[float] | str
        if encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        else:
            value = [float(v) for v in vec]
        data.append(oa.Embedding(embedding=value, index=i))
    return oa.EmbeddingResponse(
        data=data,
        model=model,
        usage=oa.EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
    )


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def model_object(
    info: ModelInfo, *, loaded: bool, license: dict[str, Any] | None = None, listed_as: str | None = None
) -> oa.ModelObject:
    """A ``/v1/models`` entry, with id ``listed_as`` when that is another name for the model. ``license`` is the
    license package's summary when available, else the summary the store recorded in ``ModelInfo``."""
    lic = (
        license
        if license is not None
        else {
            "id": info.license.id,
            "name": info.license.name,
            "spdx": info.license.spdx,
            "url": info.license.url,
            "commercial_use": info.license.commercial_use,
        }
    )
    alias = listed_as if listed_as not in (None, info.name) else None
    entry = oa.ModelObject(
        id=alias or info.name,
        created=int(info.created),
        owned_by="kaiyuan",
        license=oa.LicenseObject(**lic),
        loaded=loaded,
        context_length=info.context_length or None,
        evals=info.evals or None,
    )
    if alias:
        entry.alias_of = info.name  # set only here: an unset field is left out of the JSON
    return entry
