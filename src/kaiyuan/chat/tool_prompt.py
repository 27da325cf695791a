"""Tools described in a system message, for chat templates that cannot show tools (the bundled SmolLM2's).

Owns the text: the tool list as JSON and how to call one, in the call format the model's tool-call parser reads
(the generic dialect: a bare JSON object, as llama.cpp's generic format asks; Hermes: ``<tool_call>`` blocks),
merged into the conversation's first system message or put before it. Without it a forced call is still valid
(the grammar sees to that) but the model never read what the tool is for. Must not know HTTP or engines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kaiyuan.types import Message

__all__ = ["tool_system_text", "with_tool_system_message"]

_CALL_FORMATS = {
    "generic": (
        'To call a tool, answer with only a JSON object: {"name": <tool name>, "arguments": <arguments object>}. '
        'For several calls: {"tool_calls": [<call>, ...]}. Otherwise answer the user normally.'
    ),
    "hermes": (
        'To call a tool, reply with <tool_call>{"name": <tool name>, "arguments": <arguments object>}</tool_call> '
        "for each call. Otherwise answer the user normally."
    ),
}


def tool_system_text(tools: Sequence[dict[str, Any]], tool_parser: str) -> str:
    """The tool descriptions (name, description, parameters) and the call format for ``tool_parser``."""
    listed = "\n".join(json.dumps(tool.get("function", tool), ensure_ascii=False) for tool in tools)
    text = f"You can call these tools:\n{listed}"
    call_format = _CALL_FORMATS.get(tool_parser)
    return f"{text}\n{call_format}" if call_format else text


def with_tool_system_message(
    messages: Sequence[Message], tools: Sequence[dict[str, Any]], tool_parser: str
) -> list[Message]:
    """``messages`` with the tool text appended to the first system message (or a new one before all)."""
    text = tool_system_text(tools, tool_parser)
    out = list(messages)
    if out and out[0].role in ("system", "developer"):
        first = out[0]
        out[0] = replace(first, content=f"{first.content}\n\n{text}" if first.content else text)
    else:
        out.insert(0, Message(role="system", content=text))
    return out
