"""MCP (Model Context Protocol) tools for kaiyuan's models: sessions to the servers the owner configured in
kaiyuan.toml (``[mcp.servers.NAME]``, stdio or Streamable HTTP, through the official ``mcp`` SDK) and the
server-side agent loop that lets a model call them.

This room sits between ``server`` and ``chat``: it drives generation through a callable its caller passes (the
native path the routes use) and never imports the routes. The ``mcp`` SDK is imported only when a session opens.
"""

from kaiyuan.mcp._config import McpServerConfig, McpSettings, mcp_settings
from kaiyuan.mcp._hub import McpHub, McpTool
from kaiyuan.mcp._loop import LoopResult, McpUse, ToolListing, ToolRun, run_tool_loop, run_tool_loop_sync

__all__ = [
    "LoopResult",
    "McpHub",
    "McpServerConfig",
    "McpSettings",
    "McpTool",
    "McpUse",
    "ToolListing",
    "ToolRun",
    "mcp_settings",
    "run_tool_loop",
    "run_tool_loop_sync",
]
