"""The MCP servers the owner configured: ``[mcp]`` and ``[mcp.servers.NAME]`` in kaiyuan.toml.

Owns reading and checking that table (``Settings.mcp``, raw): per server either ``command`` / ``args`` / ``env``
(stdio: kaiyuan starts the command) or ``url`` / ``headers`` (Streamable HTTP), and the loop's bounds. Requests
only ever name a server from this table: a request can never bring its own command or URL. Must not know HTTP
routes or the chat layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import ConfigError

__all__ = ["McpServerConfig", "McpSettings", "mcp_settings"]


@dataclass(frozen=True)
class McpServerConfig:
    """One configured MCP server."""

    name: str
    command: str | None = None  # stdio: the program kaiyuan starts
    args: tuple[str, ...] = ()  # stdio: its arguments
    env: dict[str, str] = field(default_factory=dict)  # stdio: extra environment variables
    url: str | None = None  # Streamable HTTP endpoint (e.g. http://127.0.0.1:8000/mcp)
    headers: dict[str, str] = field(default_factory=dict)  # Streamable HTTP: extra headers (auth)


@dataclass(frozen=True)
class McpSettings:
    """The servers and the bounds of the tool loop."""

    servers: dict[str, McpServerConfig] = field(default_factory=dict)
    max_steps: int = 8  # model turns with tool calls before the model must answer (count)
    call_timeout_s: float = 60.0  # one tool call (seconds)
    connect_timeout_s: float = 60.0  # starting / reaching a server and listing its tools (seconds)
    max_output_chars: int = 16_000  # a tool result longer than this is cut (characters)


def _strings(value: Any, where: str, kind: type) -> Any:
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"kaiyuan.toml {where} must be a list of strings")
        return tuple(value)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"kaiyuan.toml {where} must be a table of strings")
    return dict(value)


def _server(name: str, table: Any) -> McpServerConfig:
    where = f"[mcp.servers.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"kaiyuan.toml {where} must be a table")
    unknown = sorted(set(table) - {"command", "args", "env", "url", "headers"})
    if unknown:
        raise ConfigError(
            f"kaiyuan.toml {where}: unknown keys {', '.join(unknown)} (command/args/env or url/headers)"
        )
    command, url = table.get("command"), table.get("url")
    if (command is None) == (url is None):
        raise ConfigError(f"kaiyuan.toml {where} needs either command (stdio) or url (Streamable HTTP)")
    if command is not None and not isinstance(command, str):
        raise ConfigError(f"kaiyuan.toml {where}.command must be a string")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ConfigError(f"kaiyuan.toml {where}.url must be an http:// or https:// URL")
    return McpServerConfig(
        name=name,
        command=command,
        args=_strings(table.get("args", []), f"{where}.args", list),
        env=_strings(table.get("env", {}), f"{where}.env", dict),
        url=url,
        headers=_strings(table.get("headers", {}), f"{where}.headers", dict),
    )


def mcp_settings(raw: dict[str, Any]) -> McpSettings:
    """``Settings.mcp`` checked; raises ``ConfigError`` naming the bad key."""
    servers = raw.get("servers", {})
    if not isinstance(servers, dict):
        raise ConfigError("kaiyuan.toml [mcp.servers] must be a table of servers")
    bounds: dict[str, Any] = {}
    for key, kind in (
        ("max_steps", int),
        ("call_timeout_s", float),
        ("connect_timeout_s", float),
        ("max_output_chars", int),
    ):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"kaiyuan.toml [mcp] {key} must be a positive number, got {value!r}")
            bounds[key] = kind(value)
    return McpSettings(servers={name: _server(name, table) for name, table in servers.items()}, **bounds)
