"""A small MCP server for the tests, written with the official ``mcp`` SDK: ``get_weather(city)`` and a tool
that answers with far too much text. ``python weather_server.py`` serves stdio; ``python weather_server.py PORT``
serves Streamable HTTP on 127.0.0.1:PORT/mcp. ``WEATHER_SERVER_ONLY=get_weather`` in its environment leaves the
other tools out (a small model offered ``flood`` may pick it); ``WEATHER_SERVER_HANG=1`` adds ``hang()``, a tool
that never answers."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Get the current weather of a city."""
    return f"The weather in {city} is sunny, 25C."


def flood(lines: int) -> str:
    """Return many lines of text."""
    return "\n".join(f"line {i}" for i in range(lines))


if os.environ.get("WEATHER_SERVER_ONLY") != "get_weather":
    server.tool()(flood)


async def hang() -> str:
    """Never answer."""
    await asyncio.sleep(3600)
    return "too late"


if os.environ.get("WEATHER_SERVER_HANG") == "1":
    server.tool()(hang)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
    else:
        server.run("stdio")
