"""docs/api-ollama.md stays true to the code: every /api route and every Ollama option is in its tables."""

from __future__ import annotations

import re
from pathlib import Path

from kaiyuan.protocol import ollama as ol
from kaiyuan.protocol.convert_ollama import OLLAMA_API_VERSION
from kaiyuan.server.routes_ollama import router

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api-ollama.md").read_text(encoding="utf-8")


def test_every_route_is_in_the_endpoint_table() -> None:
    for route in router.routes:
        for method in sorted(route.methods):  # type: ignore[attr-defined]
            assert f"| `{method} {route.path}` |" in DOC, (
                f"{method} {route.path} missing from docs/api-ollama.md"
            )


def test_every_option_is_in_the_options_table() -> None:
    table = DOC[DOC.index("### Options") : DOC.index("### keep_alive")]
    documented = set(re.findall(r"`([a-z0-9_]+)`", table))
    assert set(ol.Options.model_fields) <= documented
    ignored = " ".join(line for line in table.splitlines() if "ignored (logged)" in line)
    assert all(f"`{name}`" in ignored for name in ol.IGNORED_OPTIONS)


def test_version_matches() -> None:
    assert f'"version": "{OLLAMA_API_VERSION}"' in DOC
