"""Llama 3.1/3.2/3.3 JSON tool calls: the whole answer is ``{"name": "f", "parameters": {...}}``.

Several calls may follow one another separated by ``;``; ``<|python_tag|>`` may precede them. Only an answer
that *starts* with such an object naming one of the offered tools is a call; any other answer is content.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed
from kaiyuan.chat.tool_call_parsers._json_scan import skip_ws

__all__ = ["Llama3ToolParser"]

_PYTHON_TAG = "<|python_tag|>"


class Llama3ToolParser(ToolCallParser):
    name = "llama3"

    def __init__(
        self, tools: list[dict[str, Any]] | None = None, *, id_factory: Callable[[], str] | None = None
    ) -> None:
        super().__init__(tools, id_factory=id_factory)
        self._decided = False

    def _find_start(self) -> tuple[int | None, int]:
        if self._decided:
            return None, 0
        i = skip_ws(self._buf, 0)
        rest = self._buf[i:]
        if not rest:
            return None, 0
        if rest.startswith("{") or rest.startswith(_PYTHON_TAG):
            self._decided = True
            return i, 0
        if _PYTHON_TAG.startswith(rest) and not self._final:
            return None, len(self._buf)
        self._decided = True
        return None, 0

    def _reset_section(self) -> None:
        self._step = "tag"
        self._reset_call_object()

    def _begin_call(self, name: str, call_id: str | None = None) -> None:
        if self._functions and name not in self._functions:
            raise _Malformed(f"{name!r} is not one of the offered tools")
        super()._begin_call(name, call_id)

    def _section(self) -> None:
        if self._step == "tag":
            self._try_lit(_PYTHON_TAG)
            self._step = "object"
        while True:
            if self._step == "object":
                self._call_object()
                self._step = "sep"
            if not self._try_lit(";"):
                return
            self._reset_call_object()
            self._step = "object"
