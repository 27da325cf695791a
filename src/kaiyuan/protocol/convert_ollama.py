"""The Ollama skin's translation layer: Ollama wire models ↔ kaiyuan's native types.

Owns: Ollama requests (``protocol/ollama.py``) → ``ChatRequest`` / ``CompletionRequest`` (options → sampling, ``think``
→ reasoning settings, ``format`` → ``response_format``, Ollama tool calls with object arguments → native calls
with JSON-text arguments), ``keep_alive`` values → seconds, native ``Chunk`` streams and results → Ollama chat /
generate objects (``thinking`` beside ``content``, whole tool calls with object arguments, ``done_reason`` and the
nanosecond timings on the final object), and model listings (``ModelInfo`` → ``/api/tags``, ``/api/ps`` entries).
Requests that are valid JSON but ask for what kaiyuan does not do (images, ``suffix``, template overrides) raise
``UnsupportedFeature`` naming the field; known Ollama options kaiyuan has no use for are logged once.

Must not know the engine, the chat layer, HTTP or the store (protocol → leaf + pydantic only); it reuses what
every skin shares from ``convert_shared.py`` (``NativeChoice``, the model's default options).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kaiyuan.errors import InvalidRequest, UnsupportedFeature
from kaiyuan.protocol import ollama as ol
from kaiyuan.protocol._json_depth import parse_bounded
from kaiyuan.protocol.convert_shared import (
    NativeChoice,
    log_ignored_options,
    logprob_entries,
    options_dict,
    sampling_fields,
)
from kaiyuan.types import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    Message,
    ModelInfo,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "FOREVER",
    "OLLAMA_API_VERSION",
    "ChatEncoder",
    "GenerateEncoder",
    "Timings",
    "chat_request_to_native",
    "created_at",
    "embedding_vectors",
    "format_parameters",
    "generate_request_to_native",
    "iso_time",
    "list_model",
    "model_details",
    "parameter_lines",
    "parse_keep_alive",
    "process_model",
    "response_format_from",
    "sampling_from_options",
    "think_settings",
]

log = logging.getLogger(__name__)

#: The Ollama API level kaiyuan answers ``/api/version`` with (thinking, tool-call ids and indexes, logprobs).
OLLAMA_API_VERSION = "0.12.0"

#: ``keep_alive`` meaning "never unload" (a negative number, or "-1").
FOREVER = math.inf

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# ---------------------------------------------------------------------------------------------------------------
# Small shared pieces: times, keep_alive, options
# ---------------------------------------------------------------------------------------------------------------


def iso_time(timestamp: float) -> str:
    """Unix seconds → RFC 3339 with nanosecond-style fraction and ``Z``, as Ollama writes times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created_at(timestamp: float | None = None) -> str:
    """``created_at`` of a response object (now, unless given)."""
    return iso_time(datetime.now(UTC).timestamp() if timestamp is None else timestamp)


def parse_keep_alive(value: float | str | None) -> float | None:
    """``keep_alive`` → seconds to keep the model loaded after the request; ``FOREVER`` for a negative value;
    ``None`` when not given. Numbers are seconds; strings are Go durations ("5m", "1h30m", "300ms", "0") or a
    plain number of seconds ("-1")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest(
            'keep_alive must be a duration such as "5m" or a number of seconds', param="keep_alive"
        )
    if isinstance(value, int | float):
        return FOREVER if value < 0 else float(value)
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return FOREVER if number < 0 else number
    sign = 1.0
    if text and text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise InvalidRequest(
            f'keep_alive {value!r} is not a duration: use e.g. "5m", "1h30m", "0" (unload now) or -1 (never)',
            param="keep_alive",
        )
    return FOREVER if sign < 0 and total > 0 else total


def sampling_from_options(
    opts: Mapping[str, Any], *, logprobs: bool = False, top_logprobs: int = 0
) -> tuple[SamplingParams, int | None]:
    """Native sampling settings from Ollama options, and the requested context window (``num_ctx``) if any.
    Options kaiyuan does not act on are logged once each (the request still runs)."""
    log_ignored_options(opts)
    sampling = SamplingParams(**sampling_fields(opts), logprobs=logprobs, top_logprobs=top_logprobs)
    num_ctx = opts.get("num_ctx")
    return sampling, int(num_ctx) if num_ctx is not None else None


def response_format_from(value: Any) -> dict[str, Any] | None:
    """Ollama ``format`` ("json" or a JSON schema object) → native ``response_format`` (enforced by grammar)."""
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise InvalidRequest('format must be "json" or a JSON schema object', param="format")


def think_settings(think: bool | str | None) -> tuple[str | None, dict[str, Any]]:
    """Ollama ``think`` → (``reasoning_effort``, chat-template variables).

    ``false`` closes the thinking at once (and tells templates with an ``enable_thinking`` switch); ``true`` asks
    templates to think; a level ("low" … "max") is a thinking budget; unset leaves the model's default (reasoning
    models think)."""
    if think is None:
        return None, {}
    if think is False:
        return "none", {"enable_thinking": False}
    if think is True:
        return None, {"enable_thinking": True}
    return str(think), {"enable_thinking": True}


# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------


def _arguments_text(arguments: dict[str, Any] | str, param: str) -> str:
    if isinstance(arguments, str):
        try:
            parsed = (
                parse_bounded(arguments, what="tool call arguments", param=param) if arguments.strip() else {}
            )
        except json.JSONDecodeError:
            raise InvalidRequest("tool call arguments must be a JSON object", param=param) from None
        if not isinstance(parsed, dict):
            raise InvalidRequest("tool call arguments must be a JSON object", param=param)
        return json.dumps(parsed, ensure_ascii=False)
    return json.dumps(arguments, ensure_ascii=False)


def _native_messages(messages: Sequence[ol.Message]) -> list[Message]:
    out: list[Message] = []
    open_calls: list[
        ToolCall
    ] = []  # calls of earlier assistant messages not answered yet (to match tool_name)
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        if m.images:
            raise UnsupportedFeature(
                "this model has no vision: images are not supported; send text only", param=f"{param}.images"
            )
        if m.role == "assistant":
            calls = [
                ToolCall(
                    name=c.function.name,
                    arguments=_arguments_text(
                        c.function.arguments, f"{param}.tool_calls[{k}].function.arguments"
                    ),
                    id=c.id or "",
                )
                for k, c in enumerate(m.tool_calls or [])
            ]
            open_calls = list(calls)
            content = m.content if m.content or not calls else None
            out.append(
                Message(
                    role="assistant", content=content, reasoning_content=m.thinking or None, tool_calls=calls
                )
            )
        elif m.role == "tool":
            call_id = m.tool_call_id
            if call_id is None:
                match = next((c for c in open_calls if not m.tool_name or c.name == m.tool_name), None)
                if match is not None:
                    open_calls.remove(match)
                    call_id = match.id or None
            out.append(Message(role="tool", content=m.content or "", tool_call_id=call_id, name=m.tool_name))
        else:
            out.append(Message(role=m.role, content=m.content or ""))
    return out


def chat_request_to_native(
    req: ol.ChatRequest,
    *,
    model_options: Mapping[str, Any] | None = None,
) -> tuple[ChatRequest, int | None]:
    """An Ollama chat request as a native ``ChatRequest``, and the ``num_ctx`` it asked for (None: not set).

    ``model_options`` are the model's default options (an Ollama ``params`` layer), under the request's own. (The
    model's default system message is the chat layer's business: ``ChatModel.default_system``.)"""
    if req.truncate is not None or req.shift is not None:
        ol.log_once(
            ("chat", "truncate"),
            "Ollama 'truncate'/'shift' are ignored: kaiyuan never cuts a prompt (logged once)",
        )
    sampling, num_ctx = sampling_from_options(
        options_dict(req.options, model_options),
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
    )
    messages = _native_messages(req.messages)
    effort, kwargs = think_settings(req.think)
    tools = [t.model_dump(mode="json", exclude_none=True) for t in req.tools or []]
    native = ChatRequest(
        model=req.model,
        messages=messages,
        sampling=sampling,
        stream=req.stream is not False,
        tools=tools,
        tool_choice="auto" if tools else None,
        response_format=response_format_from(req.format),
        reasoning_effort=effort,
        chat_template_kwargs=kwargs,
    )
    return native, num_ctx


_logged_context = False


def generate_request_to_native(
    req: ol.GenerateRequest,
    *,
    model_options: Mapping[str, Any] | None = None,
) -> tuple[ChatRequest | CompletionRequest, int | None]:
    """An Ollama generate request: ``raw`` → a ``CompletionRequest`` of the prompt as given; otherwise a one-turn
    ``ChatRequest`` (``system`` if given, then the prompt) rendered with the model's template.

    ``suffix`` (fill-in-the-middle), ``images`` and ``template`` overrides are rejected; ``context`` is ignored
    (logged)."""
    global _logged_context
    if req.suffix:
        raise UnsupportedFeature(
            "suffix (fill-in-the-middle) is not supported; send the text before the gap as the prompt",
            param="suffix",
        )
    if req.images:
        raise UnsupportedFeature(
            "this model has no vision: images are not supported; send text only", param="images"
        )
    if req.template:
        raise UnsupportedFeature(
            "template overrides (Go templates) are not supported: kaiyuan renders the model's own chat template; "
            "send raw: true with a fully formatted prompt instead",
            param="template",
        )
    if req.context:
        level = logging.INFO if _logged_context else logging.WARNING
        _logged_context = True
        log.log(
            level,
            "ignoring Ollama 'context' (%d tokens): kaiyuan keeps no generate context; send the history",
            len(req.context),
        )
    if req.raw and req.system:
        raise InvalidRequest("raw mode does not support system; put it in the prompt", param="system")
    sampling, num_ctx = sampling_from_options(
        options_dict(req.options, model_options),
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
    )
    prompt = req.prompt or ""
    if req.raw:
        return (
            CompletionRequest(
                model=req.model,
                prompt=prompt,
                sampling=sampling,
                stream=req.stream is not False,
                response_format=response_format_from(req.format),
            ),
            num_ctx,
        )
    messages = [Message(role="system", content=req.system)] if req.system else []
    messages.append(Message(role="user", content=prompt))
    effort, kwargs = think_settings(req.think)
    return (
        ChatRequest(
            model=req.model,
            messages=messages,
            sampling=sampling,
            stream=req.stream is not False,
            response_format=response_format_from(req.format),
            reasoning_effort=effort,
            chat_template_kwargs=kwargs,
        ),
        num_ctx,
    )


# ---------------------------------------------------------------------------------------------------------------
# Responses: timings, tool calls, logprobs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Timings:
    """Nanosecond timings of one request, as Ollama reports them on the final object."""

    total: int = 0  # request received → answer complete
    load: int = 0  # loading the model (0 when it was already loaded)
    prompt_eval: int = 0  # model ready → first generated token
    eval: int = 0  # first generated token → end

    def fields(self, usage: Usage | None) -> dict[str, int]:
        out = {
            "total_duration": self.total,
            "load_duration": self.load,
            "prompt_eval_duration": self.prompt_eval,
            "eval_duration": self.eval,
        }
        if usage is not None:
            out["prompt_eval_count"] = usage.prompt_tokens
            out["eval_count"] = usage.completion_tokens
        return out


_R = TypeVar("_R", ol.ChatResponse, ol.GenerateResponse)


def _stamp(obj: _R, timings: Timings, usage: Usage | None) -> _R:
    """``obj`` with Ollama's final statistics set."""
    for key, value in timings.fields(usage).items():
        setattr(obj, key, value)
    return obj


def _done_reason(reason: str | None) -> str:
    # Ollama says "stop" after tool calls too; "cancelled" never reaches a client that is still listening.
    return "length" if reason == "length" else "stop"


def _arguments_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    log.warning("tool call %r has arguments that are not a JSON object (%r); sending {}", name, text[:200])
    return {}


def _tool_calls_out(calls: Sequence[ToolCall], first_index: int = 0) -> list[ol.ToolCallOut]:
    return [
        ol.ToolCallOut(
            id=c.id or None,
            function=ol.ToolCallFunctionOut(
                index=first_index + k, name=c.name, arguments=_arguments_object(c.name, c.arguments)
            ),
        )
        for k, c in enumerate(calls)
    ]


def _logprobs_out(items: Sequence[TokenLogprob]) -> list[ol.Logprob]:
    return logprob_entries(items, ol.Logprob, ol.TopLogprob)


@dataclass
class _ToolCallBuffer:
    """Collects streamed tool-call fragments; Ollama sends each call whole, once it is complete."""

    calls: dict[int, ToolCall] = field(default_factory=dict)
    sent: int = 0  # calls already sent (by index order)

    def add(self, delta: ToolCallDelta) -> list[ToolCall]:
        """Add a fragment; returns the calls completed by it (a later call starting completes the earlier)."""
        done = []
        if delta.index not in self.calls:
            done = self._take(below=delta.index)
            self.calls[delta.index] = ToolCall(name="", arguments="", id="")
        call = self.calls[delta.index]
        call.id = delta.id or call.id
        call.name = delta.name or call.name
        call.arguments += delta.arguments
        return done

    def _take(self, below: int | None = None) -> list[ToolCall]:
        ready = sorted(i for i in self.calls if below is None or i < below)
        out = [self.calls.pop(i) for i in ready]
        self.sent += len(out)
        return out

    def flush(self) -> list[ToolCall]:
        return self._take()


class _StreamState:
    """What the chat and generate encoders share: the finish reason, usage, pending tool calls."""

    def __init__(self, model: str, logprobs: bool) -> None:
        self.model = model
        self.logprobs = logprobs
        self.done_reason = "stop"
        self.usage: Usage | None = None
        self.tools = _ToolCallBuffer()


class ChatEncoder(_StreamState):
    """Native chunks → Ollama ``/api/chat`` objects: content and thinking pieces as they come, each tool call whole,
    then (``final``) one ``done: true`` object with ``done_reason`` and the timings."""

    def _obj(self, message: ol.MessageOut, lps: Sequence[TokenLogprob] = ()) -> ol.ChatResponse:
        return ol.ChatResponse(
            model=self.model,
            created_at=created_at(),
            message=message,
            done=False,
            logprobs=_logprobs_out(lps) if self.logprobs and lps else None,
        )

    def encode(self, chunk: Chunk) -> list[ol.ChatResponse]:
        if chunk.usage is not None:
            self.usage = chunk.usage
        out: list[ol.ChatResponse] = []
        if chunk.content or chunk.reasoning or (self.logprobs and chunk.logprobs):
            out.append(
                self._obj(
                    ol.MessageOut(content=chunk.content, thinking=chunk.reasoning or None), chunk.logprobs
                )
            )
        ready: list[ToolCall] = []
        for delta in chunk.tool_calls:
            ready += self.tools.add(delta)
        if chunk.finish_reason is not None:
            self.done_reason = _done_reason(chunk.finish_reason)
            ready += self.tools.flush()
        if ready:
            first = self.tools.sent - len(ready)
            out.append(self._obj(ol.MessageOut(content="", tool_calls=_tool_calls_out(ready, first))))
        return out

    def final(self, timings: Timings) -> ol.ChatResponse:
        return _stamp(
            ol.ChatResponse(
                model=self.model,
                created_at=created_at(),
                message=ol.MessageOut(content=""),
                done=True,
                done_reason=self.done_reason,
            ),
            timings,
            self.usage,
        )

    def whole(self, choice: NativeChoice, usage: Usage, timings: Timings) -> ol.ChatResponse:
        """The non-streamed answer: the whole message in one ``done: true`` object."""
        msg = choice.message
        return _stamp(
            ol.ChatResponse(
                model=self.model,
                created_at=created_at(),
                message=ol.MessageOut(
                    content=msg.content or "",
                    thinking=msg.reasoning_content or None,
                    tool_calls=_tool_calls_out(msg.tool_calls) if msg.tool_calls else None,
                ),
                done=True,
                done_reason=_done_reason(choice.finish_reason),
                logprobs=_logprobs_out(choice.logprobs) if self.logprobs else None,
            ),
            timings,
            usage,
        )


class GenerateEncoder(_StreamState):
    """Native chunks → Ollama ``/api/generate`` objects (``response`` and ``thinking`` pieces), then ``final``."""

    def encode(self, chunk: Chunk) -> list[ol.GenerateResponse]:
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.done_reason = _done_reason(chunk.finish_reason)
        if not (chunk.content or chunk.reasoning or (self.logprobs and chunk.logprobs)):
            return []
        return [
            ol.GenerateResponse(
                model=self.model,
                created_at=created_at(),
                response=chunk.content,
                thinking=chunk.reasoning or None,
                done=False,
                logprobs=_logprobs_out(chunk.logprobs) if self.logprobs and chunk.logprobs else None,
            )
        ]

    def final(self, timings: Timings) -> ol.GenerateResponse:
        return _stamp(
            ol.GenerateResponse(
                model=self.model,
                created_at=created_at(),
                response="",
                done=True,
                done_reason=self.done_reason,
            ),
            timings,
            self.usage,
        )

    def whole(self, choice: NativeChoice, usage: Usage, timings: Timings) -> ol.GenerateResponse:
        msg = choice.message
        return _stamp(
            ol.GenerateResponse(
                model=self.model,
                created_at=created_at(),
                response=msg.content or "",
                thinking=msg.reasoning_content or None,
                done=True,
                done_reason=_done_reason(choice.finish_reason),
                logprobs=_logprobs_out(choice.logprobs) if self.logprobs else None,
            ),
            timings,
            usage,
        )


# ---------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------


def embedding_vectors(vectors: Sequence[Sequence[float]], dimensions: int | None) -> list[list[float]]:
    """``/api/embed`` vectors: L2-normalised; ``dimensions`` keeps the first that many (then normalises again),
    as Ollama does for Matryoshka models. More dimensions than the model has is an error."""
    out = []
    for vec in vectors:
        values = [float(v) for v in vec]
        if dimensions is not None:
            if dimensions > len(values):
                raise InvalidRequest(
                    f"dimensions {dimensions} exceeds this model's {len(values)} embedding dimensions",
                    param="dimensions",
                )
            values = values[:dimensions]
        norm = math.sqrt(sum(v * v for v in values))
        out.append([v / norm for v in values] if norm > 0 else values)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def model_details(info: ModelInfo) -> ol.ModelDetails:
    details = info.details
    family = str(details.get("family") or info.architecture or "")
    families = details.get("families")
    return ol.ModelDetails(
        parent_model=str(details.get("parent_model") or ""),
        format=str(details.get("format") or "gguf"),
        family=family,
        families=list(families) if isinstance(families, list) else ([family] if family else None),
        parameter_size=str(details.get("parameter_size") or ""),
        quantization_level=str(details.get("quantization_level") or info.quantization or ""),
    )


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256-").removeprefix("sha256:")


def list_model(info: ModelInfo) -> ol.ListModel:
    """A ``/api/tags`` entry."""
    return ol.ListModel(
        name=info.name,
        model=info.name,
        modified_at=iso_time(info.created),
        size=info.size,
        digest=_hex(info.digest),
        details=model_details(info),
        license=info.license.id,
    )


def process_model(info: ModelInfo, *, expires_at: float, context_length: int) -> ol.ProcessModel:
    """A ``/api/ps`` entry. kaiyuan runs on the CPU (llama.cpp build without GPU offload): ``size_vram`` is 0."""
    return ol.ProcessModel(
        name=info.name,
        model=info.name,
        size=info.size,
        digest=_hex(info.digest),
        details=model_details(info),
        expires_at=iso_time(expires_at),
        size_vram=0,
        context_length=context_length,
    )


def parameter_lines(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Default options as Modelfile ``PARAMETER`` values: (name, value text), a list giving one line per item."""
    lines = []
    for key in sorted(params):
        value = params[key]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                text = json.dumps(item, ensure_ascii=False)
            elif isinstance(item, bool):
                text = str(item).lower()
            else:
                text = str(item)
            lines.append((key, text))
    return lines


def format_parameters(params: Mapping[str, Any]) -> str | None:
    """Default options as ``/api/show`` writes them: ``name value`` lines (None when there are none)."""
    return "\n".join(f"{key:<30} {text}" for key, text in parameter_lines(params)) or None
