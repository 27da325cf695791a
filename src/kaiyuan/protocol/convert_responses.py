"""Translation between the OpenAI Responses wire models (``protocol/responses.py``) and kaiyuan's native types.

Owns: a Responses request (plus the stored conversation it continues) → ``ChatRequest`` (items → messages,
``instructions`` → a system message, function tools and ``tool_choice``, ``text.format`` → a response format,
``reasoning.effort`` → the thinking budget, ``max_output_tokens``); a finished native result → output items
(``reasoning`` with ``reasoning_text``, ``message`` with ``output_text``, ``function_call``) and the ``response``
object (``incomplete`` with ``max_output_tokens`` when the budget ran out); native ``Chunk`` streams → the full
event sequence with ``sequence_number``, ``output_index``, ``item_id`` and ``content_index``, in the order the
``openai`` SDK's strict ``responses.stream()`` helper follows.

Must not know the engine, the chat layer, HTTP or storage (protocol → leaf + pydantic only).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from kaiyuan.errors import InvalidRequest, UnsupportedFeature
from kaiyuan.protocol import responses as rs
from kaiyuan.protocol._json_depth import check_text_depth
from kaiyuan.protocol.convert_shared import NativeChoice, logprob_entries
from kaiyuan.types import (
    ChatRequest,
    Chunk,
    Message,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "MAX_INPUT_ITEMS",
    "ResponseStreamEncoder",
    "input_items",
    "items_to_messages",
    "mcp_call_item",
    "mcp_list_tools_item",
    "mcp_uses",
    "new_item_id",
    "output_items",
    "parse_items",
    "request_to_native",
    "response_object",
    "unset_sampling",
    "usage_out",
]

MAX_INPUT_ITEMS = 4096  # items in one request's input (a larger list is refused, not truncated)

_ITEMS: TypeAdapter[list[rs.InputItem]] = TypeAdapter(list[rs.InputItem])

_REJECTED_FIELDS = {
    "conversation": "conversations are not supported; chain responses with previous_response_id",
    "prompt": "stored prompt templates are not supported; send input and instructions",
}


def new_item_id(prefix: str) -> str:
    """An item id as OpenAI writes them: ``resp_…``, ``msg_…``, ``rs_…``, ``fc_…``."""
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------------------


def _part_text(parts: str | Sequence[rs.ContentPart], param: str) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for i, part in enumerate(parts):
        if part.type in ("input_text", "output_text") and part.text is not None:
            texts.append(part.text)
        elif part.type == "refusal" and part.refusal is not None:
            texts.append(part.refusal)
        elif part.type in ("input_image", "input_file", "input_audio"):
            raise UnsupportedFeature(
                f"{part.type} parts are not supported: this model reads text only; send input_text",
                param=f"{param}[{i}]",
            )
        else:
            raise InvalidRequest(f"a {part.type} part needs its text", param=f"{param}[{i}]")
    return "".join(texts)


def parse_items(raw: Sequence[dict[str, Any]]) -> list[Any]:
    """Stored item dicts (input or output items) as input item models."""
    return _ITEMS.validate_python(list(raw))


def items_to_messages(items: Sequence[Any], param: str = "input") -> list[Message]:
    """Items in conversation order as native messages. Reasoning, assistant text and function calls that follow
    each other form one assistant turn; ``function_call_output`` items become tool messages."""
    messages: list[Message] = []
    turn: Message | None = None

    def assistant() -> Message:
        nonlocal turn
        if turn is None:
            turn = Message(role="assistant")
            messages.append(turn)
        return turn

    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if item.type == "item_reference":
            raise UnsupportedFeature(
                "item_reference items are not supported; continue a stored response with previous_response_id",
                param=where,
            )
        if item.type == "mcp_list_tools":
            continue  # what a server offered; the tools themselves are offered again when asked for
        if item.type in ("mcp_call", "function_call"):
            check_text_depth(item.arguments, what="tool call arguments", param=f"{where}.arguments")
        if item.type == "mcp_call":
            call = ToolCall(name=item.name, arguments=item.arguments, id=item.id)
            assistant().tool_calls.append(call)
            turn = None
            result = item.output if item.error is None else f"Error: {item.error}"
            messages.append(Message(role="tool", content=result or "", tool_call_id=item.id, name=item.name))
            continue
        if item.type == "reasoning":
            parts = item.content or item.summary
            text = "".join(p.text for p in parts)
            if text:
                current = assistant()
                current.reasoning_content = (current.reasoning_content or "") + text
        elif item.type == "function_call":
            assistant().tool_calls.append(ToolCall(name=item.name, arguments=item.arguments, id=item.call_id))
        elif item.type == "function_call_output":
            turn = None
            output = _part_text(item.output, f"{where}.output")
            messages.append(Message(role="tool", content=output, tool_call_id=item.call_id))
        elif item.role == "assistant":
            current = assistant()
            current.content = (current.content or "") + _part_text(item.content, f"{where}.content")
        else:
            turn = None
            role = "system" if item.role == "developer" else item.role
            messages.append(Message(role=role, content=_part_text(item.content, f"{where}.content")))
    return messages


def input_items(req: rs.ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as item dicts with ids (what ``GET …/input_items`` lists and what is stored)."""
    if isinstance(req.input, str):
        return [
            {
                "id": new_item_id("msg"),
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": req.input}],
            }
        ]
    if len(req.input) > MAX_INPUT_ITEMS:
        raise InvalidRequest(f"at most {MAX_INPUT_ITEMS} input items, got {len(req.input)}", param="input")
    out = []
    for item in req.input:
        data = item.model_dump(mode="json", exclude_none=True, by_alias=True)
        if data["type"] == "message" and isinstance(data["content"], str):
            kind = "output_text" if data["role"] == "assistant" else "input_text"
            data["content"] = [{"type": kind, "text": data["content"]}]
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}.get(data["type"], "item")
        data.setdefault("id", new_item_id(prefix))
        out.append(data)
    return out


def _tools(req: rs.ResponsesRequest) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(req.tools or []):
        if tool.type == "mcp":
            continue  # run by the server-side loop (mcp_uses)
        if tool.type != "function":
            raise UnsupportedFeature(
                f"tools of type {tool.type!r} are not supported; declare function tools and run them yourself",
                param=f"tools[{i}].type",
            )
        if not tool.name:
            raise InvalidRequest("a function tool needs a name", param=f"tools[{i}].name")
        function: dict[str, Any] = {
            "name": tool.name,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        }
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def mcp_uses(req: rs.ResponsesRequest) -> list[tuple[str, tuple[str, ...] | None]]:
    """The request's ``mcp`` tools as (server label, allowed tool names or None). A request can only name a
    server the owner configured: ``server_url``, ``connector_id``, ``headers`` and ``authorization`` are refused
    (no arbitrary URL, no SSRF); approvals are not supported, so ``require_approval`` must be ``never``."""
    uses = []
    for i, tool in enumerate(req.tools or []):
        if tool.type != "mcp":
            continue
        where = f"tools[{i}]"
        if not tool.server_label:
            raise InvalidRequest(
                "an mcp tool needs server_label (a server configured in kaiyuan.toml)", param=where
            )
        for name in ("server_url", "connector_id", "headers", "authorization"):
            if getattr(tool, name) is not None:
                raise UnsupportedFeature(
                    f"mcp tools cannot carry {name}: kaiyuan reaches only the MCP servers its owner configured "
                    "in kaiyuan.toml; name one with server_label",
                    param=f"{where}.{name}",
                )
        if tool.require_approval not in (None, "never"):
            raise UnsupportedFeature(
                "approvals of MCP calls are not supported; set require_approval to 'never'",
                param=f"{where}.require_approval",
            )
        allowed = tool.allowed_tools
        if isinstance(allowed, dict):
            allowed = allowed.get("tool_names")
            if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
                raise InvalidRequest("allowed_tools must list tool names", param=f"{where}.allowed_tools")
        uses.append((tool.server_label, tuple(allowed) if allowed is not None else None))
    return uses


def mcp_list_tools_item(server: str, tools: Sequence[Any]) -> dict[str, Any]:
    """The ``mcp_list_tools`` output item (``tools``: objects with name, description, input_schema)."""
    listed = [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema, "annotations": None}
        for t in tools
    ]
    return {
        "id": new_item_id("mcpl"),
        "type": "mcp_list_tools",
        "server_label": server,
        "tools": listed,
        "error": None,
    }


def mcp_call_item(server: str, call: ToolCall, output: str, is_error: bool) -> dict[str, Any]:
    """The ``mcp_call`` output item of one executed call."""
    return {
        "id": new_item_id("mcp"),
        "type": "mcp_call",
        "server_label": server,
        "name": call.name,
        "arguments": call.arguments,
        "output": None if is_error else output,
        "error": output if is_error else None,
        "status": "failed" if is_error else "completed",
    }


def _tool_choice(req: rs.ResponsesRequest, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        if choice == "required" and not tools and not mcp_uses(req):
            raise InvalidRequest(
                "tool_choice 'required' needs at least one tool in tools", param="tool_choice"
            )
        return choice
    if choice.type != "function" or not choice.name:
        raise UnsupportedFeature(
            "tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'name': ...}",
            param="tool_choice",
        )
    if choice.name not in {t["function"]["name"] for t in tools} and not mcp_uses(req):
        raise InvalidRequest(
            f"tool_choice names function {choice.name!r}, which is not in tools", param="tool_choice"
        )
    return {"type": "function", "function": {"name": choice.name}}


def _response_format(req: rs.ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a schema", param="text.format.schema")
    schema: dict[str, Any] = {"name": fmt.name or "output", "schema": fmt.schema_}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def request_to_native(req: rs.ResponsesRequest, history: Sequence[Message] = ()) -> ChatRequest:
    """A Responses request as kaiyuan's ``ChatRequest``: ``instructions`` first, then ``history`` (the stored
    conversation of ``previous_response_id``), then this request's input. Raises ``InvalidRequest`` /
    ``UnsupportedFeature`` naming the param."""
    for name, reason in _REJECTED_FIELDS.items():
        if getattr(req, name) is not None:
            raise UnsupportedFeature(reason, param=name)
    items = [] if isinstance(req.input, str) else req.input
    if len(items) > MAX_INPUT_ITEMS:
        raise InvalidRequest(f"at most {MAX_INPUT_ITEMS} input items, got {len(items)}", param="input")
    messages: list[Message] = []
    if req.instructions:
        messages.append(Message(role="system", content=req.instructions))
    messages.extend(history)
    if isinstance(req.input, str):
        messages.append(Message(role="user", content=req.input))
    else:
        messages.extend(items_to_messages(items))
    if not messages:
        raise InvalidRequest("input must not be empty", param="input")
    tools = _tools(req)
    tool_choice = _tool_choice(req, tools)
    top = req.top_logprobs or 0
    logprobs = top > 0 or "message.output_text.logprobs" in (req.include or [])
    defaults = SamplingParams()
    sampling = SamplingParams(
        temperature=req.temperature if req.temperature is not None else defaults.temperature,
        top_p=req.top_p if req.top_p is not None else defaults.top_p,
        top_k=req.top_k if req.top_k is not None else defaults.top_k,
        max_tokens=req.max_output_tokens,
        seed=req.seed,
        logprobs=logprobs,
        top_logprobs=top,
    )
    parallel = req.parallel_tool_calls is not False and req.max_tool_calls != 1
    return ChatRequest(
        model=req.model,
        messages=messages,
        sampling=sampling,
        stream=bool(req.stream),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=_response_format(req),
        reasoning_effort=req.reasoning.effort if req.reasoning is not None else None,
        user=req.user,
    )


def unset_sampling(req: rs.ResponsesRequest) -> set[str]:
    """The ``SamplingParams`` fields the request left to the model's default options."""
    sent = {name for name in req.model_fields_set if getattr(req, name) is not None}
    unset = {"min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "stop"}
    unset |= {name for name in ("temperature", "top_p", "top_k", "seed") if name not in sent}
    if "max_output_tokens" not in sent:
        unset.add("max_tokens")
    return unset


# ---------------------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------------------


def usage_out(usage: Usage) -> rs.ResponseUsage:
    return rs.ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=rs.InputTokensDetails(cached_tokens=usage.cached_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=rs.OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
        total_tokens=usage.total_tokens,
    )


def _logprobs(items: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return logprob_entries(items, dict, dict)


def response_object(req: rs.ResponsesRequest, *, id: str, model: str, status: str) -> rs.Response:
    """The ``response`` object for ``req`` before any output: the request's settings echoed back."""
    text = {"format": {"type": "text"}}
    if req.text is not None and req.text.format is not None:
        text = {"format": req.text.format.model_dump(mode="json", by_alias=True, exclude_none=True)}
    return rs.Response(
        id=id,
        created_at=int(time.time()),
        status=status,  # type: ignore[arg-type]
        background=bool(req.background),
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        metadata=dict(req.metadata or {}),
        model=model,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        reasoning=req.reasoning.model_dump(mode="json") if req.reasoning is not None else None,
        store=req.store is not False,
        temperature=req.temperature,
        text=text,
        tool_choice=(
            req.tool_choice.model_dump(mode="json", exclude_none=True)
            if isinstance(req.tool_choice, rs.NamedFunctionChoice)
            else (req.tool_choice or "auto")
        ),
        tools=[t.model_dump(mode="json", exclude_none=True) for t in req.tools or []],
        top_logprobs=req.top_logprobs,
        top_p=req.top_p,
        truncation=req.truncation or "disabled",
        user=req.user,
    )


def _reasoning_item(id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": id, "type": "reasoning", "summary": [], "content": content, "status": status}


def _message_item(id: str, text: str | None, status: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    content = []
    if text is not None:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}]
    return {"id": id, "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def finish_status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """The response status (and ``incomplete_details``) for a native finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "cancelled":
        return "cancelled", None
    return "completed", None


def output_items(choice: NativeChoice, *, max_tool_calls: int | None = None) -> list[dict[str, Any]]:
    """The output items of a finished choice: reasoning, then the message, then function calls (capped)."""
    msg = choice.message
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    out = []
    if msg.reasoning_content:
        out.append(_reasoning_item(new_item_id("rs"), msg.reasoning_content, status))
    if msg.content or not msg.tool_calls:
        lps = _logprobs(choice.logprobs)
        out.append(_message_item(new_item_id("msg"), msg.content or "", status, lps))
    calls = msg.tool_calls[:max_tool_calls] if max_tool_calls is not None else msg.tool_calls
    for call in calls:
        out.append(_call_item(new_item_id("fc"), call.id, call.name, call.arguments, "completed"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ResponseStreamEncoder:
    """Native ``Chunk`` objects → Responses stream events. ``start()`` gives ``response.created`` and
    ``response.in_progress``; each output item is announced (``output_item.added``, ``content_part.added``)
    before its deltas and finished (``…done``) before the next one starts; the usage chunk ends the stream with
    ``response.completed`` (or ``response.incomplete``) carrying the whole response. ``final`` is that response."""

    response: rs.Response
    max_tool_calls: int | None = None
    final: rs.Response | None = None
    _seq: int = 0
    _items: list[dict[str, Any]] = field(default_factory=list)
    _open: str | None = None  # "reasoning" | "message" | "call"
    _text: list[str] = field(default_factory=list)
    _logprobs: list[dict[str, Any]] = field(default_factory=list)
    _calls: dict[int, int] = field(default_factory=dict)  # native call index → output index
    _finish: str | None = None

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _lifecycle(self, kind: str, response: rs.Response) -> rs.LifecycleEvent:
        return rs.LifecycleEvent(type=kind, sequence_number=self._next(), response=response)  # type: ignore[arg-type]

    def start(self) -> list[Any]:
        snapshot = self.response.model_copy(update={"status": "in_progress"})
        return [
            self._lifecycle("response.created", snapshot),
            self._lifecycle("response.in_progress", snapshot),
        ]

    @property
    def _index(self) -> int:
        return len(self._items) - 1

    def _item_added(self, item: dict[str, Any]) -> list[Any]:
        self._items.append(item)
        event = rs.OutputItemEvent(
            type="response.output_item.added",
            sequence_number=self._next(),
            output_index=self._index,
            item=item,
        )
        return [event]

    def _part(self, kind: str, part: dict[str, Any]) -> rs.ContentPartEvent:
        return rs.ContentPartEvent(
            type=kind,  # type: ignore[arg-type]
            sequence_number=self._next(),
            item_id=self._items[-1]["id"],
            output_index=self._index,
            content_index=0,
            part=part,
        )

    def _open_item(self, kind: str) -> list[Any]:
        out = self._close()
        self._open = kind
        if kind == "reasoning":
            out += self._item_added(_reasoning_item(new_item_id("rs"), "", "in_progress"))
            out.append(self._part("response.content_part.added", {"type": "reasoning_text", "text": ""}))
        else:
            out += self._item_added(_message_item(new_item_id("msg"), None, "in_progress", []))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self._part("response.content_part.added", part))
        return out

    def _close(self, status: str = "completed") -> list[Any]:
        if self._open is None:
            return []
        item = self._items[-1]
        ids = {"sequence_number": 0, "item_id": item["id"], "output_index": self._index, "content_index": 0}
        text = "".join(self._text)
        out: list[Any] = []
        if self._open == "reasoning":
            out.append(rs.ReasoningTextDoneEvent(**{**ids, "sequence_number": self._next()}, text=text))
            finished = _reasoning_item(item["id"], text, status)
            out.append(self._part("response.content_part.done", {"type": "reasoning_text", "text": text}))
        elif self._open == "message":
            out.append(
                rs.TextDoneEvent(
                    **{**ids, "sequence_number": self._next()}, text=text, logprobs=self._logprobs
                )
            )
            finished = _message_item(item["id"], text, status, self._logprobs)
            out.append(self._part("response.content_part.done", finished["content"][0]))
        else:
            finished = {**item, "status": "completed"}
            del ids["content_index"]
            out.append(
                rs.FunctionCallArgumentsDoneEvent(
                    **{**ids, "sequence_number": self._next()}, name=item["name"], arguments=item["arguments"]
                )
            )
        self._items[-1] = finished
        out.append(
            rs.OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self._next(),
                output_index=self._index,
                item=finished,
            )
        )
        self._open = None
        self._text = []
        self._logprobs = []
        return out

    def encode(self, chunk: Chunk) -> list[Any]:
        """The events for one native chunk (zero, one or several)."""
        out: list[Any] = []
        if chunk.reasoning:
            if self._open != "reasoning":
                out += self._open_item("reasoning")
            self._text.append(chunk.reasoning)
            out.append(
                rs.ReasoningTextDeltaEvent(
                    sequence_number=self._next(),
                    item_id=self._items[-1]["id"],
                    output_index=self._index,
                    content_index=0,
                    delta=chunk.reasoning,
                )
            )
        if chunk.content:
            if self._open != "message":
                out += self._open_item("message")
            self._text.append(chunk.content)
            lps = _logprobs(chunk.logprobs)
            self._logprobs.extend(lps)
            out.append(
                rs.TextDeltaEvent(
                    sequence_number=self._next(),
                    item_id=self._items[-1]["id"],
                    output_index=self._index,
                    content_index=0,
                    delta=chunk.content,
                    logprobs=lps,
                )
            )
        for call in chunk.tool_calls:
            out += self._call_delta(call)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
            out += self._close("incomplete" if chunk.finish_reason == "length" else "completed")
        if chunk.usage is not None and chunk.finish_reason is None and not (chunk.content or chunk.reasoning):
            out += self._finished(chunk.usage)
        return out

    def _call_delta(self, call: Any) -> list[Any]:
        out: list[Any] = []
        if call.index not in self._calls:
            if self.max_tool_calls is not None and len(self._calls) >= self.max_tool_calls:
                return out  # past max_tool_calls: the call is dropped
            out += self._close()
            self._open = "call"
            out += self._item_added(
                _call_item(new_item_id("fc"), call.id or "", call.name or "", "", "in_progress")
            )
            self._calls[call.index] = self._index
        elif self._calls[call.index] != self._index or self._open != "call":
            return out  # a late fragment of a call whose item is finished already
        if call.arguments:
            self._items[-1] = {**self._items[-1], "arguments": self._items[-1]["arguments"] + call.arguments}
            out.append(
                rs.FunctionCallArgumentsDeltaEvent(
                    sequence_number=self._next(),
                    item_id=self._items[-1]["id"],
                    output_index=self._index,
                    delta=call.arguments,
                )
            )
        return out

    def _finished(self, usage: Usage) -> list[Any]:
        out = self._close()
        status, details = finish_status(self._finish)
        self.final = self.response.model_copy(
            update={
                "status": status,
                "incomplete_details": details,
                "output": list(self._items),
                "usage": usage_out(usage),
            }
        )
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out.append(self._lifecycle(kind, self.final))
        return out

    def replay(self, response: rs.Response) -> list[Any]:
        """The events of a response produced whole (the MCP tool loop): each output item in order, as if it had
        streamed, then ``response.completed`` / ``response.incomplete`` with ``response``'s status and usage."""
        out: list[Any] = []
        calls = 0
        for item in response.output:
            kind = item["type"]
            if kind == "message":
                text = "".join(part.get("text") or "" for part in item.get("content", []))
                out += self.encode(Chunk(content=text)) if text else []
            elif kind == "reasoning":
                text = "".join(part["text"] for part in item.get("content") or item.get("summary") or [])
                out += self.encode(Chunk(reasoning=text)) if text else []
            elif kind == "function_call":
                delta = ToolCallDelta(
                    index=calls, id=item["call_id"], name=item["name"], arguments=item["arguments"]
                )
                calls += 1
                out += self.encode(Chunk(tool_calls=[delta]))
            else:
                out += self._close()
                out += self._whole_item(item)
        out += self._close()
        self._finish = "length" if response.status == "incomplete" else "stop"
        usage = response.usage
        native = Usage(
            prompt_tokens=usage.input_tokens if usage else 0,
            completion_tokens=usage.output_tokens if usage else 0,
            reasoning_tokens=usage.output_tokens_details.reasoning_tokens if usage else 0,
            cached_tokens=usage.input_tokens_details.cached_tokens if usage else 0,
        )
        return out + self._finished(native)

    def _whole_item(self, item: dict[str, Any]) -> list[Any]:
        """An item that does not stream (``mcp_list_tools``, ``mcp_call``): added, its progress events, done."""
        out = self._item_added(item)
        index, kind = self._index, item["type"]
        phases = ["in_progress", "failed" if item.get("error") else "completed"]
        for phase in phases:
            out.append(
                rs.ItemProgressEvent(
                    type=f"response.{kind}.{phase}",
                    sequence_number=self._next(),
                    item_id=item["id"],
                    output_index=index,
                )
            )
        out.append(
            rs.OutputItemEvent(
                type="response.output_item.done", sequence_number=self._next(), output_index=index, item=item
            )
        )
        return out

    def error(self, code: str | None, message: str, param: str | None) -> rs.ErrorEvent:
        return rs.ErrorEvent(sequence_number=self._next(), code=code, message=message, param=param)
