"""The server-side agent loop: the model calls MCP tools, kaiyuan runs them and feeds the results back, until the
model answers, calls a tool the client must run itself, or the step cap is reached.

Owns the loop over the native types: the MCP tools offered as functions (``allowed_tools`` filtered), each model
turn through the ``generate`` callable the caller injects (the same native path its routes use), the calls run
on the hub, their outputs appended as tool messages, usage summed over the turns. After ``max_steps`` turns with
tool calls the model gets one more turn with tools off, so the loop always ends with an answer. Must not import
the routes or know wire formats.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kaiyuan.errors import InvalidRequest
from kaiyuan.mcp._hub import McpHub, McpTool
from kaiyuan.types import ChatRequest, Message, ToolCall, Usage

__all__ = ["LoopResult", "McpUse", "ToolListing", "ToolRun", "run_tool_loop", "run_tool_loop_sync"]

Generate = Callable[[ChatRequest], Awaitable[Any]]  # a request → its ChatResult (choices, usage)


@dataclass(frozen=True)
class McpUse:
    """A request's use of one configured server: its name and the tools it allows (None: all)."""

    server: str
    allowed_tools: tuple[str, ...] | None = None


@dataclass
class ToolListing:
    server: str
    tools: list[McpTool]


@dataclass
class ToolRun:
    server: str
    call: ToolCall
    output: str
    is_error: bool


@dataclass
class LoopResult:
    """What happened, in order (``steps``), and the model's last turn (``result``), with usage of all turns."""

    steps: list[ToolListing | ToolRun] = field(default_factory=list)
    result: Any = None
    usage: Usage = field(default_factory=Usage)


def _add(total: Usage, usage: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + usage.prompt_tokens,
        completion_tokens=total.completion_tokens + usage.completion_tokens,
        reasoning_tokens=total.reasoning_tokens + usage.reasoning_tokens,
        cached_tokens=total.cached_tokens + usage.cached_tokens,
    )


def _function(tool: McpTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


async def _offer(
    hub: McpHub, uses: Sequence[McpUse], taken: set[str]
) -> tuple[list[ToolListing], dict[str, str]]:
    repeated = sorted(label for label, n in Counter(use.server for use in uses).items() if n > 1)
    if repeated:
        # each use is a listing on the server: refuse before any, so a request cannot multiply them
        raise InvalidRequest(
            f"the MCP server {repeated[0]!r} is named by more than one mcp tool; name it once and put all "
            "its tools in that tool's allowed_tools",
            param="tools",
        )
    listings: list[ToolListing] = []
    owner: dict[str, str] = {}
    for use in uses:
        tools = await hub.list_tools(use.server)
        if use.allowed_tools is not None:
            tools = [t for t in tools if t.name in use.allowed_tools]
        for tool in tools:
            if tool.name in taken or tool.name in owner:
                raise InvalidRequest(
                    f"the tool name {tool.name!r} of MCP server {use.server!r} is offered twice; narrow "
                    "allowed_tools or rename your function tool",
                    param="tools",
                )
            owner[tool.name] = use.server
        listings.append(ToolListing(use.server, tools))
    return listings, owner


async def _run_call(hub: McpHub, server: str, call: ToolCall) -> ToolRun:
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        return ToolRun(server, call, "the arguments are not a JSON object", True)
    output, is_error = await hub.call(server, call.name, arguments)
    return ToolRun(server, call, output, is_error)


async def run_tool_loop(
    hub: McpHub, request: ChatRequest, uses: Sequence[McpUse], generate: Generate
) -> LoopResult:
    """Run ``request`` with the tools of ``uses`` added, executing the model's MCP calls (see module doc)."""
    taken = {t["function"]["name"] for t in request.tools}
    listings, owner = await _offer(hub, uses, taken)
    out = LoopResult(steps=list(listings))
    offered = [_function(tool) for listing in listings for tool in listing.tools]
    current = replace(request, tools=[*request.tools, *offered], messages=list(request.messages))
    for step in range(hub.settings.max_steps + 1):
        if step == hub.settings.max_steps:
            current = replace(current, tool_choice="none")  # the cap: one more turn, to answer
        result = await generate(current)
        out.result = result
        out.usage = _add(out.usage, result.usage)
        message = result.choices[0].message
        calls = message.tool_calls
        if not calls or any(call.name not in owner for call in calls):
            return out  # an answer, or a call the client runs itself
        runs = [await _run_call(hub, owner[call.name], call) for call in calls]
        out.steps.extend(runs)
        current.messages.append(
            Message(
                role="assistant",
                content=message.content,
                reasoning_content=message.reasoning_content,
                tool_calls=calls,
            )
        )
        for run in runs:
            text = f"Error: {run.output}" if run.is_error else run.output
            current.messages.append(
                Message(role="tool", content=text, tool_call_id=run.call.id, name=run.call.name)
            )
        if current.tool_choice not in (None, "auto", "none"):
            current = replace(current, tool_choice="auto")  # a forced call happened; now the model may answer
    return out


def run_tool_loop_sync(
    raw_settings: dict[str, Any], request: ChatRequest, servers: Sequence[str], generate: Generate
) -> LoopResult:
    """``run_tool_loop`` for a caller without an event loop (``kaiyuan run --mcp``): opens the servers named in
    ``servers`` from the raw ``[mcp]`` table, runs the loop, and closes them (stdio servers stop)."""
    from kaiyuan.mcp._config import mcp_settings

    async def main() -> LoopResult:
        hub = McpHub(mcp_settings(raw_settings))
        try:
            for server in servers:
                hub.config(server, param="--mcp")
            return await run_tool_loop(hub, request, [McpUse(server) for server in servers], generate)
        finally:
            await hub.close()

    return asyncio.run(main())
