"""`kaiyuan run MODEL PROMPT --mcp NAME` through the real CLI, the bundled model and the test MCP server (stdio):
the model's calls and their results go to stderr, its answer to stdout; unknown servers are one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KAIYUAN = [sys.executable, "-m", "kaiyuan"]
WEATHER = Path(__file__).parents[1] / "mcp" / "weather_server.py"


def _configure() -> None:
    home = Path(os.environ["KAIYUAN_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "kaiyuan.toml").write_text(
        f"[mcp.servers.weather]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(WEATHER))}]\n"
    )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAIYUAN_THREADS": "1"}
    return subprocess.run(
        [*KAIYUAN, *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env
    )


def test_run_calls_the_mcp_server_and_answers() -> None:
    _configure()
    done = _run(
        "run", "smollm2", "What is the weather in Paris?", "--mcp", "weather", "--tool-choice", "required",
        "--temperature", "0", "--max-tokens", "96",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[mcp] weather." in done.stderr and "[mcp result]" in done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr


def test_unknown_server_is_one_clear_line() -> None:
    _configure()
    done = _run("run", "smollm2", "Hi", "--mcp", "nope")
    assert done.returncode != 0
    assert "no MCP server 'nope' is configured (configured: weather)" in done.stderr
    assert "Traceback" not in done.stderr
