"""Fallback for models of no known family: JSON calls or Hermes blocks.

Accepted: an answer that *starts* with ``{"name": "f", "arguments": {...}}`` or
``{"tool_calls": [{"name": ..., "arguments": ...}, ...]}`` naming offered tools, and ``<tool_call>{...}</tool_call>``
blocks anywhere (the convention most ChatML fine-tunes follow). Any other answer is content.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed, _NeedMore
from kaiyuan.chat.tool_call_parsers._json_scan import decode_string, scan_string, skip_ws

__all__ = ["GenericToolParser"]


_NEXT = {
    "list-open": "list-key",
    "list-key": "list-colon",
    "list-colon": "list-bracket",
    "list-bracket": "list",
}


class GenericToolParser(ToolCallParser):
    name = "generic"
    start_markers = ("<tool_call>",)

    def __init__(
        self, tools: list[dict[str, Any]] | None = None, *, id_factory: Callable[[], str] | None = None
    ) -> None:
        super().__init__(tools, id_factory=id_factory)
        self._decided = False

    def _find_start(self) -> tuple[int | None, int]:
        if not self._decided:
            i = skip_ws(self._buf, 0)
            if i < len(self._buf):
                self._decided = True
                if self._buf[i] == "{":
                    return i, 0
        return super()._find_start()

    def _begin_call(self, name: str, call_id: str | None = None) -> None:
        if self._step != "hermes" and self._functions and name not in self._functions:
            raise _Malformed(f"{name!r} is not one of the offered tools")
        super()._begin_call(name, call_id)

    def _reset_section(self) -> None:
        self._step = "kind"
        self._reset_call_object()

    def _section(self) -> None:
        if self._step == "kind":
            if self._buf.startswith("<tool_call>"):
                self._consume(len("<tool_call>"))
                self._step = "hermes"
            else:
                self._step = "list-open" if self._first_key() == "tool_calls" else "single"
        if self._step == "hermes":
            self._call_object()
            self._step = "hermes-close"
        if self._step == "hermes-close":
            self._lit("</tool_call>")
            return
        if self._step == "single":
            self._call_object()
            return
        for step, action in (
            ("list-open", lambda: self._lit("{")),
            ("list-key", self._json_string),
            ("list-colon", lambda: self._lit(":")),
            ("list-bracket", lambda: self._lit("[")),
        ):
            if self._step == step:
                action()
                self._step = _NEXT[step]
        while self._step in ("list", "list-next"):
            if self._step == "list":
                self._call_object()
                self._step = "list-next"
            if self._try_lit(","):
                self._reset_call_object()
                self._step = "list"
                continue
            self._lit("]")
            self._step = "list-close"
        self._lit("}")

    def _first_key(self) -> str:
        """The first key of the JSON object at the start of the buffer, without consuming anything."""
        i = skip_ws(self._buf, 0)
        if i >= len(self._buf) or self._buf[i] != "{":
            raise _Malformed("not a JSON object")
        j = skip_ws(self._buf, i + 1)
        if j == len(self._buf):
            raise _NeedMore
        if self._buf[j] != '"':
            raise _Malformed("not a call object")
        end = scan_string(self._buf, j)
        if end is None:
            raise _NeedMore
        return decode_string(self._buf, j, end)
