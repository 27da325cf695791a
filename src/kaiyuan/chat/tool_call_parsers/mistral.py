"""Mistral tool calls, both generations.

* v3 (Mistral 7B v0.3, Nemo): ``[TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "abc123XYZ"}, ...]``
* v11+ (Small 3.1/3.2, Magistral, Devstral): ``[TOOL_CALLS]f[ARGS]{...}``, optionally ``f[CALL_ID]id[ARGS]{...}``,
  one ``[TOOL_CALLS]`` per call.
"""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed

__all__ = ["MistralToolParser"]


class MistralToolParser(ToolCallParser):
    name = "mistral"
    start_markers = ("[TOOL_CALLS]",)

    def _reset_section(self) -> None:
        self._step = "open"
        self._reset_call_object()

    def _section(self) -> None:
        if self._step == "open":
            self._lit("[TOOL_CALLS]", ws=False)
            self._step = "kind"
        if self._step == "kind":
            self._step = "list" if self._try_lit("[") else "name"
        if self._step in ("list", "list-next"):
            while True:
                if self._step == "list":
                    self._call_object()
                    self._step = "list-next"
                if self._try_lit(","):
                    self._reset_call_object()
                    self._step = "list"
                    continue
                self._lit("]")
                return
        if self._step == "name":
            name, marker = self._until_any("[ARGS]", "[CALL_ID]")
            name = name.strip()
            if not name or any(c.isspace() for c in name):
                raise _Malformed("bad function name")
            self._call_name = name
            self._call_id: str | None = None
            self._step = "id" if marker == "[CALL_ID]" else "args-marker"
        if self._step == "id":
            self._lit("[CALL_ID]", ws=False)
            self._step = "id-text"
        if self._step == "id-text":
            self._call_id = self._until("[ARGS]").strip() or None
            self._begin_call(self._call_name, self._call_id)
            self._step = "args"
        if self._step == "args-marker":
            self._lit("[ARGS]", ws=False)
            self._begin_call(self._call_name)
            self._step = "args"
        self._stream_json_args()
        self._close_open_call()
