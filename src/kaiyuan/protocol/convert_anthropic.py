"""Translation between the Anthropic Messages wire models (``protocol/anthropic.py``) and kaiyuan's native types.

Owns: a Messages request → ``ChatRequest`` (system text, content blocks → messages, tools and ``tool_choice``
with the forced name kept, ``thinking`` → the reasoning budget, ``stop_sequences``), a finished native result →
the ``message`` object, native ``Chunk`` streams → Anthropic's named stream events (dense block indices from 0,
each block started before its deltas and stopped before the next, a ``signature_delta`` closing each thinking
block), ``stop_reason`` / ``stop_sequence``, usage (``cache_read_input_tokens`` from the prefix cache) and the
error envelope. Requests kaiyuan cannot honour raise ``InvalidRequest`` / ``UnsupportedFeature`` naming the param.

Must not know the engine, the chat layer, HTTP or the store (protocol → leaf + pydantic only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import InvalidRequest, KaiyuanError, UnsupportedFeature
from kaiyuan.protocol import anthropic as an
from kaiyuan.protocol.convert_shared import NativeChoice, new_id
from kaiyuan.types import ChatRequest, Chunk, Message, SamplingParams, ToolCall, Usage

__all__ = [
    "MessageStreamEncoder",
    "error_response",
    "error_type",
    "message_from_native",
    "messages_request_to_native",
    "new_message_id",
    "thinking_signature",
    "unset_sampling",
    "usage_out",
]

log = logging.getLogger(__name__)

# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

_IGNORED_FIELDS = ("metadata", "service_tier", "container", "context_management", "cache_control")
_logged_ignored: set[str] = set()
_MAX_STOP_SEQUENCES = 16


def new_message_id() -> str:
    """An Anthropic-style message id: ``msg_…``."""
    return new_id("msg").replace("msg-", "msg_", 1)


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_response(status: int, message: str) -> an.ErrorResponse:
    return an.ErrorResponse(error=an.ErrorDetail(type=error_type(status), message=message))


def thinking_signature(thinking: str) -> str:
    """The ``signature`` of a thinking block: a digest of its text. Anthropic's clients send thinking blocks back
    with their signature; kaiyuan accepts any signature (it has no hidden reasoning to protect)."""
    return "kaiyuan-" + hashlib.sha256(thinking.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------------------


def _text_of(blocks: str | Sequence[Any] | None, param: str) -> str:
    """Text blocks joined; images and documents refused (the model has no vision)."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    texts = []
    for i, block in enumerate(blocks):
        if block.type == "text":
            texts.append(block.text)
        else:
            raise UnsupportedFeature(
                f"{block.type} blocks are not supported: this model has no vision or document input; send text",
                param=f"{param}[{i}]",
            )
    return "\n".join(texts) if len(texts) > 1 else "".join(texts)


def _user_messages(content: str | list[Any], param: str) -> list[Message]:
    """A user turn: each ``tool_result`` block becomes a tool message (in order), text blocks a user message."""
    if isinstance(content, str):
        return [Message(role="user", content=content)]
    out: list[Message] = []
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            out.append(Message(role="user", content="\n".join(texts)))
            texts.clear()

    for i, block in enumerate(content):
        where = f"{param}[{i}]"
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_result":
            flush_text()
            result = _text_of(block.content, f"{where}.content")
            if block.is_error:
                result = f"Error: {result}"  # the template has no error flag: say it in the text
            out.append(Message(role="tool", content=result, tool_call_id=block.tool_use_id))
        elif block.type in ("thinking", "redacted_thinking", "tool_use"):
            raise InvalidRequest(f"{block.type} blocks belong in assistant messages", param=where)
        else:
            _text_of([block], param)  # raises for images and documents
    flush_text()
    return out


def _assistant_message(content: str | list[Any], param: str) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=content)
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(content):
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "thinking":
            thinking.append(block.thinking)
        elif block.type == "redacted_thinking":
            continue  # opaque to kaiyuan: nothing to show the model
        elif block.type == "tool_use":
            calls.append(ToolCall(name=block.name, arguments=json.dumps(block.input), id=block.id))
        elif block.type == "tool_result":
            raise InvalidRequest("tool_result blocks belong in user messages", param=f"{param}[{i}]")
        else:
            _text_of([block], param)
    return Message(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        reasoning_content="".join(thinking) or None,
        tool_calls=calls,
    )


def _native_messages(req: an.CountTokensRequest) -> list[Message]:
    messages: list[Message] = []
    system = _text_of(req.system, "system")
    if system:
        messages.append(Message(role="system", content=system))
    for i, m in enumerate(req.messages):
        param = f"messages[{i}].content"
        if m.role == "assistant":
            messages.append(_assistant_message(m.content, param))
        elif m.role in ("system", "developer"):
            messages.append(Message(role="system", content=_text_of(m.content, param)))
        else:  # user, and any other role a client sends for user-side input
            messages.extend(_user_messages(m.content, param))
    return messages


def _native_tools(req: an.CountTokensRequest) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(req.tools or []):
        if tool.type not in (None, "custom"):
            raise UnsupportedFeature(
                f"Anthropic's server tool {tool.type!r} is not available in kaiyuan; declare a custom tool with "
                "an input_schema and run it yourself",
                param=f"tools[{i}].type",
            )
        function: dict[str, Any] = {
            "name": tool.name,
            "parameters": tool.input_schema or {"type": "object", "properties": {}},
        }
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(req: an.CountTokensRequest, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(
            f"tool_choice {choice.type!r} needs at least one tool in tools", param="tool_choice"
        )
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        if choice.name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequest(
                f"tool_choice names tool {choice.name!r}, which is not in tools", param="tool_choice"
            )
        return {"type": "function", "function": {"name": choice.name}}
    return choice.type


def _log_ignored(req: Any) -> None:
    for name in _IGNORED_FIELDS:
        if getattr(req, name, None) is not None and name not in _logged_ignored:
            _logged_ignored.add(name)
            log.info("accepting %r but it has no effect in kaiyuan (logged once)", name)


def _stop_sequences(stops: list[str] | None) -> list[str]:
    stops = [s for s in stops or [] if s]
    if len(stops) > _MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"at most {_MAX_STOP_SEQUENCES} stop sequences are supported, got {len(stops)}",
            param="stop_sequences",
        )
    return stops


def messages_request_to_native(req: an.CountTokensRequest) -> ChatRequest:
    """A Messages (or count_tokens) request as kaiyuan's ``ChatRequest``; raises ``InvalidRequest`` naming the
    bad param. ``thinking`` enabled sets the reasoning budget, disabled closes the thinking at once; absent (or
    adaptive), the model thinks as it always does. ``output_config.format`` is enforced like a json_schema
    response_format; ``output_config.effort`` is a reasoning effort."""
    if req.mcp_servers:
        raise UnsupportedFeature(
            "mcp_servers in a request are not supported: kaiyuan reaches only MCP servers its owner configured",
            param="mcp_servers",
        )
    _log_ignored(req)
    tools = _native_tools(req)
    tool_choice = _tool_choice(req, tools)
    parallel = not (req.tool_choice is not None and req.tool_choice.disable_parallel_tool_use)
    reasoning_effort = None
    budget = None
    if req.thinking is not None:
        if req.thinking.type == "disabled":
            reasoning_effort = "none"
        elif req.thinking.type == "enabled":
            if req.thinking.budget_tokens is None:
                raise InvalidRequest(
                    "thinking of type 'enabled' needs budget_tokens", param="thinking.budget_tokens"
                )
            budget = req.thinking.budget_tokens
    full = req if isinstance(req, an.MessagesRequest) else None
    response_format: dict[str, Any] | None = None
    sampling = SamplingParams()
    if full is not None:
        if budget is not None and budget >= full.max_tokens:
            raise InvalidRequest(
                f"thinking.budget_tokens ({budget}) must be less than max_tokens ({full.max_tokens})",
                param="thinking.budget_tokens",
            )
        output = full.output_config
        if output is not None and output.effort is not None and reasoning_effort is None and budget is None:
            reasoning_effort = output.effort
        if output is not None and output.format is not None:
            schema = {"name": "output", "schema": output.format.schema_, "strict": True}
            response_format = {"type": "json_schema", "json_schema": schema}
        sampling = SamplingParams(
            temperature=full.temperature if full.temperature is not None else sampling.temperature,
            top_p=full.top_p if full.top_p is not None else sampling.top_p,
            top_k=full.top_k if full.top_k is not None else sampling.top_k,
            max_tokens=full.max_tokens,
            stop=_stop_sequences(full.stop_sequences),
        )
    return ChatRequest(
        model=req.model,
        messages=_native_messages(req),
        sampling=sampling,
        stream=bool(full is not None and full.stream),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        reasoning_effort=reasoning_effort,
        max_reasoning_tokens=budget,
        user=(full.metadata or {}).get("user_id") if full is not None else None,
    )


def unset_sampling(req: an.MessagesRequest) -> set[str]:
    """The ``SamplingParams`` fields the request left to the model's defaults (Anthropic requires ``max_tokens``)."""
    sent = {name for name in req.model_fields_set if getattr(req, name) is not None}
    unset = {"min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "seed"}
    unset |= {name for name in ("temperature", "top_p", "top_k") if name not in sent}
    if "stop_sequences" not in sent:
        unset.add("stop")
    return unset


# ---------------------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------------------


def usage_out(usage: Usage) -> an.Usage:
    """Anthropic counts cache reads apart from ``input_tokens`` (their sum is the prompt)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return an.Usage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=cached,
    )


def _stop_reason(finish: str | None, stop_sequence: str | None) -> an.StopReason:
    if finish == "length":
        return "max_tokens"
    if finish == "tool_calls":
        return "tool_use"
    if stop_sequence is not None:
        return "stop_sequence"
    return "end_turn"


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        log.warning("tool call arguments are not JSON; sending them as {'arguments': text}")
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def message_from_native(*, id: str, model: str, choice: NativeChoice, usage: Usage) -> an.Message:
    """The ``message`` object of a finished generation: thinking, text, then tool_use blocks."""
    msg = choice.message
    content: list[an.ContentOut] = []
    if msg.reasoning_content:
        content.append(
            an.ThinkingOut(
                thinking=msg.reasoning_content, signature=thinking_signature(msg.reasoning_content)
            )
        )
    if msg.content:
        content.append(an.TextOut(text=msg.content))
    for call in msg.tool_calls:
        content.append(
            an.ToolUseOut(id=_tool_use_id(call.id), name=call.name, input=_tool_input(call.arguments))
        )
    stop_sequence = getattr(choice, "stop_sequence", None)
    return an.Message(
        id=id,
        model=model,
        content=content,
        stop_reason=_stop_reason(choice.finish_reason, stop_sequence),
        stop_sequence=stop_sequence,
        usage=usage_out(usage),
    )


def _tool_use_id(call_id: str | None) -> str:
    """Anthropic's tool ids start with ``toolu_``; the dialect's own id is kept after the prefix."""
    if call_id and call_id.startswith("toolu_"):
        return call_id
    return "toolu_" + (call_id or new_id("call").removeprefix("call_"))


# ---------------------------------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MessageStreamEncoder:
    """Native ``Chunk`` objects → Anthropic stream events, in the order the ``anthropic`` SDK requires:
    ``message_start`` first (``start()``), then per block ``content_block_start`` / deltas /
    ``content_block_stop`` with dense indices from 0, then ``message_delta`` (stop reason, usage) and
    ``message_stop`` when the usage chunk arrives."""

    id: str
    model: str
    _index: int = -1
    _open: str | None = None  # "thinking" | "text" | "tool" | None
    _thinking: list[str] = field(default_factory=list)
    _calls: dict[int, int] = field(default_factory=dict)  # native call index → block index
    _finish: str | None = None
    _stop_sequence: str | None = None

    def start(self, prompt_tokens: int) -> list[Any]:
        message = an.Message(
            id=self.id,
            model=self.model,
            content=[],
            usage=an.Usage(input_tokens=prompt_tokens, output_tokens=0),
        )
        return [an.MessageStartEvent(message=message)]

    def _close(self) -> list[Any]:
        out: list[Any] = []
        if self._open == "thinking":
            signature = thinking_signature("".join(self._thinking))
            out.append(
                an.ContentBlockDeltaEvent(index=self._index, delta=an.SignatureDelta(signature=signature))
            )
            self._thinking.clear()
        if self._open is not None:
            out.append(an.ContentBlockStopEvent(index=self._index))
        self._open = None
        return out

    def _open_block(self, kind: str, block: an.ContentOut) -> list[Any]:
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(an.ContentBlockStartEvent(index=self._index, content_block=block))
        return out

    def encode(self, chunk: Chunk) -> list[Any]:
        """The events for one native chunk (zero, one or several)."""
        out: list[Any] = []
        if chunk.reasoning:
            if self._open != "thinking":
                out += self._open_block("thinking", an.ThinkingOut(thinking="", signature=""))
            self._thinking.append(chunk.reasoning)
            out.append(
                an.ContentBlockDeltaEvent(index=self._index, delta=an.ThinkingDelta(thinking=chunk.reasoning))
            )
        if chunk.content:
            if self._open != "text":
                out += self._open_block("text", an.TextOut(text=""))
            out.append(an.ContentBlockDeltaEvent(index=self._index, delta=an.TextDelta(text=chunk.content)))
        for call in chunk.tool_calls:
            if call.index not in self._calls:
                out += self._open_block(
                    "tool", an.ToolUseOut(id=_tool_use_id(call.id), name=call.name or "", input={})
                )
                self._calls[call.index] = self._index
            elif self._calls[call.index] != self._index:
                continue  # a fragment of a call whose block is closed already (calls stream one after another)
            if call.arguments:
                fragment = an.InputJSONDelta(partial_json=call.arguments)
                out.append(an.ContentBlockDeltaEvent(index=self._index, delta=fragment))
        if chunk.finish_reason is not None:
            out += self._close()
            self._finish = chunk.finish_reason
            self._stop_sequence = chunk.stop_sequence
        if (
            chunk.usage is not None
            and chunk.finish_reason is None
            and not chunk.content
            and not chunk.reasoning
        ):
            delta = an.MessageDelta(
                stop_reason=_stop_reason(self._finish, self._stop_sequence), stop_sequence=self._stop_sequence
            )
            out.append(an.MessageDeltaEvent(delta=delta, usage=usage_out(chunk.usage)))
            out.append(an.MessageStopEvent())
        return out


def error_from_kaiyuan(exc: KaiyuanError) -> an.ErrorResponse:
    return error_response(int(exc.http_status), exc.message)
