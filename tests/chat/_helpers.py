"""Test helpers for the chat package: real template fixtures and a parse-at-every-split harness."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.chat import Dialect, ResponseParser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
OWN_TEMPLATES = Path(__file__).resolve().parent / "templates"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer", "description": "Forecast days"},
            },
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER_TOOL]


def template_text(name: str) -> str:
    """A real chat template: the shared fixtures first, then the ones this package keeps itself."""
    for folder in (FIXTURES, OWN_TEMPLATES):
        path = folder / name
        if path.exists():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(name)


@dataclass(frozen=True)
class Parsed:
    content: str
    reasoning: str
    calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments)


def parse_chunks(
    dialect: Dialect,
    chunks: list[str],
    *,
    tools: list[dict[str, Any]] | None = None,
    starts_in_reasoning: bool = False,
    parse_tools: bool = True,
) -> Parsed:
    """Feed ``chunks`` through a ResponseParser and check the deltas are well-formed OpenAI stream deltas."""
    counter = itertools.count()
    parser = ResponseParser(
        dialect,
        tools=tools,
        starts_in_reasoning=starts_in_reasoning,
        parse_tools=parse_tools,
        id_factory=lambda: f"call_{next(counter)}",
    )
    deltas = [parser.feed(chunk) for chunk in chunks]
    deltas.append(parser.finish())
    assembled: dict[int, list[str]] = {}
    for delta in deltas:
        for call in delta.tool_calls:
            if call.index not in assembled:
                assert call.id and call.name, f"first delta of call {call.index} lacks id/name: {call}"
                assert call.index == len(assembled), "tool-call indexes must count up from 0"
                assembled[call.index] = [call.id, call.name, call.arguments]
            else:
                assert call.id is None and call.name is None, f"id/name sent twice: {call}"
                assembled[call.index][2] += call.arguments
    calls = tuple((i, n, a) for i, n, a in assembled.values())
    assert calls == tuple((c.id, c.name, c.arguments) for c in parser.tool_calls)
    return Parsed(
        content="".join(d.content for d in deltas),
        reasoning="".join(d.reasoning for d in deltas),
        calls=calls,
    )


def splits(text: str) -> Iterator[list[str]]:
    """Every way the stream can arrive that the tests check: one piece, one character at a time, and two pieces
    cut at every character boundary."""
    yield [text]
    yield list(text)
    for k in range(1, len(text)):
        yield [text[:k], text[k:]]


def parse_every_split(dialect: Dialect, text: str, **kwargs: Any) -> Parsed:
    """Parse ``text`` whole, then split every way; every result must equal the whole-text result."""
    whole = parse_chunks(dialect, [text], **kwargs)
    for chunks in splits(text):
        got = parse_chunks(dialect, chunks, **kwargs)
        assert got == whole, f"split {[len(c) for c in chunks][:3]}... gave {got}, expected {whole}"
    return whole
