"""Sessions to the configured MCP servers, through the official ``mcp`` SDK (2.x ``Client``).

Owns one session per server, opened on first use and kept (a stdio server runs as kaiyuan's child process; a
Streamable HTTP server is reached at its configured URL with its configured headers), listing tools (fresh on
every loop, so ``tools/list_changed`` is honoured) and calling them with a timeout, their text output cut at
``max_output_chars``. A session that fails is dropped and reopened on the next use. Tool output is untrusted
text: it is returned as text, never run. Must not know HTTP routes or the chat layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import InvalidRequest, McpError, MissingExtra
from kaiyuan.mcp._config import McpServerConfig, McpSettings

__all__ = ["McpHub", "McpTool"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class McpTool:
    """One tool a server offers."""

    server: str
    name: str
    description: str | None
    input_schema: dict[str, Any]


@dataclass
class _Session:
    """An open ``mcp.Client``, entered and exited by its own task (the SDK's task groups require it)."""

    client: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None


def _client(config: McpServerConfig, timeout: float) -> Any:
    try:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, get_default_environment
    except ImportError as exc:
        raise MissingExtra("mcp", feature="MCP tools") from exc

    if config.command is not None:
        env = {**get_default_environment(), **config.env} if config.env else None
        params = StdioServerParameters(command=config.command, args=list(config.args), env=env)
        return Client(params, read_timeout_seconds=timeout)
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert config.url is not None
    http = httpx2.AsyncClient(headers=config.headers, timeout=timeout, follow_redirects=False)
    return Client(streamable_http_client(config.url, http_client=http), read_timeout_seconds=timeout)


class McpHub:
    """The configured servers' sessions. ``close()`` ends them (and stops stdio servers)."""

    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings
        self._sessions: dict[str, _Session] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self.settings.servers)

    def config(self, name: str, param: str | None = None) -> McpServerConfig:
        try:
            return self.settings.servers[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise InvalidRequest(
                f"no MCP server {name!r} is configured (configured: {known}); the server's owner adds servers "
                "under [mcp.servers.NAME] in kaiyuan.toml",
                param=param,
            ) from None

    async def _run(self, name: str, session: _Session) -> None:
        try:
            async with _client(self.config(name), self.settings.call_timeout_s) as client:
                session.client = client
                session.ready.set()
                await session.closing.wait()
        except BaseException as exc:  # reported to whoever waits for the session
            session.error = exc
            session.ready.set()
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %r: %s", name, exc)

    async def _session(self, name: str) -> Any:
        self.config(name)
        async with self._lock:
            session = self._sessions.get(name)
            if session is None or session.error is not None or (session.task and session.task.done()):
                session = _Session()
                session.task = asyncio.create_task(self._run(name, session))
                self._sessions[name] = session
        try:
            await asyncio.wait_for(session.ready.wait(), self.settings.connect_timeout_s)
        except TimeoutError:
            await self._drop(name)
            raise McpError(
                f"MCP server {name!r} did not answer within {self.settings.connect_timeout_s:g} s"
            ) from None
        if session.error is not None:
            await self._drop(name)
            raise McpError(f"MCP server {name!r} could not be reached: {session.error}") from session.error
        return session.client

    async def _drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None and session.task is not None:
            session.closing.set()
            session.task.cancel()
            with contextlib.suppress(BaseException):
                await session.task

    async def list_tools(self, name: str) -> list[McpTool]:
        """The server's tools now (raises ``McpError`` when it cannot be reached)."""
        client = await self._session(name)
        try:
            listed = await asyncio.wait_for(
                client.list_tools(cache_mode="refresh"), self.settings.connect_timeout_s
            )
        except Exception as exc:
            await self._drop(name)
            raise McpError(f"listing the tools of MCP server {name!r} failed: {exc}") from exc
        return [
            McpTool(name, tool.name, tool.description, dict(tool.input_schema or {"type": "object"}))
            for tool in listed.tools
        ]

    async def call(self, name: str, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Call ``tool``: (its text output, cut at ``max_output_chars``; whether the server reported an error).
        A timeout or a broken session is an error result, not an exception: the model reads it and goes on."""
        try:
            client = await self._session(name)
            result = await asyncio.wait_for(client.call_tool(tool, arguments), self.settings.call_timeout_s)
        except McpError as exc:
            return exc.message, True
        except TimeoutError:
            await self._drop(name)
            return f"the tool {tool!r} did not answer within {self.settings.call_timeout_s:g} s", True
        except Exception as exc:
            await self._drop(name)
            return f"calling {tool!r} failed: {exc}", True
        texts = []
        for item in result.content:
            text = getattr(item, "text", None)
            texts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')} omitted]")
        output = "\n".join(texts)
        limit = self.settings.max_output_chars
        if len(output) > limit:
            output = output[:limit] + f"\n[output cut at {limit} characters]"
        return output, bool(result.is_error)

    async def close(self) -> None:
        for name in list(self._sessions):
            await self._drop(name)
