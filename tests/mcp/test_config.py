"""``[mcp]`` in kaiyuan.toml: servers by stdio command or URL, the loop's bounds, and clear errors for bad tables."""

from __future__ import annotations

from typing import Any

import pytest

from kaiyuan.errors import ConfigError
from kaiyuan.mcp import mcp_settings


def test_stdio_and_http_servers_and_bounds() -> None:
    settings = mcp_settings(
        {
            "max_steps": 3,
            "call_timeout_s": 5,
            "servers": {
                "files": {"command": "mcp-files", "args": ["--root", "/srv"], "env": {"A": "1"}},
                "web": {"url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer x"}},
            },
        }
    )
    assert settings.max_steps == 3 and settings.call_timeout_s == 5.0
    files, web = settings.servers["files"], settings.servers["web"]
    assert files.command == "mcp-files" and files.args == ("--root", "/srv") and files.env == {"A": "1"}
    assert web.url == "https://mcp.example/mcp" and web.headers == {"Authorization": "Bearer x"}
    assert mcp_settings({}).servers == {}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"servers": {"x": {}}}, "either command"),
        ({"servers": {"x": {"command": "a", "url": "http://b"}}}, "either command"),
        ({"servers": {"x": {"url": "file:///etc/passwd"}}}, "http:// or https://"),
        ({"servers": {"x": {"command": "a", "args": "b"}}}, "list of strings"),
        ({"servers": {"x": {"command": "a", "shell": True}}}, "unknown keys shell"),
        ({"max_steps": 0}, "positive"),
        ({"servers": []}, "table of servers"),
    ],
)
def test_bad_tables_say_what_to_fix(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        mcp_settings(raw)
