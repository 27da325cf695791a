"""Command line: ``kaiyuan COMMAND``. One module per command group; each is imported only when its command runs,
so ``kaiyuan --help`` stays fast and never imports llama.cpp, torch or the server."""

from __future__ import annotations

from kaiyuan.cli._app import main

__all__ = ["main"]
