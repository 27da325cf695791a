"""``kaiyuan.mcp``'s surface and place: a sorted ``__all__`` whose names exist; importing it loads neither the
``mcp`` SDK (only an opened session does) nor the server, the wire models or the CLI (it sits below the server)."""

from __future__ import annotations

import subprocess
import sys

import kaiyuan.mcp


def test_all_is_sorted_and_complete() -> None:
    assert kaiyuan.mcp.__all__ == sorted(kaiyuan.mcp.__all__)
    for name in kaiyuan.mcp.__all__:
        assert hasattr(kaiyuan.mcp, name), name


def test_import_stays_light_and_below_the_server() -> None:
    code = "import sys, kaiyuan.mcp; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert {m.split(".")[0] for m in loaded} & {"mcp", "fastapi", "starlette", "llama_cpp", "torch"} == set()
    upper = ("kaiyuan.server", "kaiyuan.protocol", "kaiyuan.cli")
    assert {m for m in loaded if m.startswith(upper)} == set()
