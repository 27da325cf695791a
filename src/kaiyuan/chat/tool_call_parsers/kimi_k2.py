"""Kimi K2 tool calls: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0``
``<|tool_call_argument_begin|>{...}<|tool_call_end|>…<|tool_calls_section_end|>``."""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed

__all__ = ["KimiK2ToolParser"]

_SECTION_BEGIN = "<|tool_calls_section_begin|>"
_SECTION_END = "<|tool_calls_section_end|>"


def _function_name(call_id: str) -> str:
    """``functions.get_weather:0`` → ``get_weather``."""
    name = call_id.strip()
    if name.startswith("functions."):
        name = name[len("functions.") :]
    head, sep, tail = name.rpartition(":")
    if sep and tail.isdigit():
        name = head
    return name


class KimiK2ToolParser(ToolCallParser):
    name = "kimi_k2"
    start_markers = (_SECTION_BEGIN,)

    def _reset_section(self) -> None:
        self._step = "open"

    def _section(self) -> None:
        if self._step == "open":
            self._lit(_SECTION_BEGIN, ws=False)
            self._step = "call"
        while True:
            if self._step == "call":
                if self._try_lit(_SECTION_END):
                    return
                self._lit("<|tool_call_begin|>")
                self._step = "id"
            if self._step == "id":
                name = _function_name(self._until("<|tool_call_argument_begin|>"))
                if not name:
                    raise _Malformed("empty function name")
                self._begin_call(name)
                self._step = "args"
            if self._step == "args":
                self._stream_json_args()
                self._step = "end"
            self._lit("<|tool_call_end|>")
            self._close_open_call()
            self._step = "call"
