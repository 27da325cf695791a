"""Hermes-style tool calls: ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>``.

Spoken by Hermes 2 Pro/3, Qwen 2.5, Qwen3, QwQ and ERNIE 4.5 (each call in its own block; parallel calls are
consecutive blocks). Arguments stream as they arrive once the name is known.
"""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser

__all__ = ["HermesToolParser"]


class HermesToolParser(ToolCallParser):
    name = "hermes"
    start_markers = ("<tool_call>",)

    def _reset_section(self) -> None:
        self._step = "open"
        self._reset_call_object()

    def _section(self) -> None:
        if self._step == "open":
            self._lit("<tool_call>", ws=False)
            self._step = "object"
        if self._step == "object":
            self._call_object()
            self._step = "close"
        self._lit("</tool_call>")
