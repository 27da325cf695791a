"""Helpers for end-to-end tests: a tiny random-weight GGUF imported with the real ``kaiyuan import`` CLI into a
fresh KAIYUAN_HOME, served by a real ``kaiyuan serve`` subprocess (1 thread, 1024-token slots, 2 slots) on a free
127.0.0.1 port, and driven with the official ``openai`` SDK.

The server process itself is started by ``start_server`` of ``tests/server/test_openai_sdk_integration.py``
(free port, KAIYUAN_* stripped from the environment, waits for ``/health``, terminates it afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner

from kaiyuan.cli._app import cli
from tests.server.test_openai_sdk_integration import Server, start_server

__all__ = ["Server", "import_model", "serve_models"]


def _cli_env(home: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("KAIYUAN_")}
    env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1")
    return env


def import_model(home: Path, path: Path, name: str) -> None:
    """``kaiyuan import PATH --name NAME`` into ``home`` (through the real CLI)."""
    result = CliRunner().invoke(cli, ["import", str(path), "--name", name], env=_cli_env(home))
    assert result.exit_code == 0, result.output


def serve_models(home: Path, *models: str) -> Iterator[Server]:
    """A ``kaiyuan serve`` process over ``home`` with ``models`` preloaded; use with ``yield from``."""
    yield from start_server(home, "--threads", "1", "--parallel", "2", *models)
