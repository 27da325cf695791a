"""Qwen3-Coder / Qwen3.5 XML tool calls:
``<tool_call>\\n<function=f>\\n<parameter=k>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>``.

Values are raw text (one newline on each side is dropped); the function's JSON schema decides how to read them.
A ``<function=…>`` block without the ``<tool_call>`` wrapper is accepted too.
"""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed, coerce_param_value

__all__ = ["Qwen3CoderToolParser"]


class Qwen3CoderToolParser(ToolCallParser):
    name = "qwen3_coder"
    start_markers = ("<tool_call>", "<function=")

    def _reset_section(self) -> None:
        self._step = "wrapper"
        self._wrapped = False

    def _section(self) -> None:
        if self._step == "wrapper":
            self._wrapped = self._try_lit("<tool_call>", ws=False)
            self._step = "function"
        if self._step == "function":
            self._lit("<function=")
            self._step = "name"
        if self._step == "name":
            name = self._until(">").strip()
            if not name or any(c.isspace() for c in name):
                raise _Malformed("bad function name")
            self._call_name = name
            self._begin_call(name)
            self._step = "param"
        while self._step != "close":
            if self._step == "param":
                if self._try_lit("</function>"):
                    self._end_params()
                    self._step = "close"
                    break
                self._lit("<parameter=")
                self._step = "key"
            if self._step == "key":
                self._key = self._until(">").strip()
                self._step = "value"
            raw = self._param_value()
            self._emit_param(
                self._key, coerce_param_value(raw, self._param_schema(self._call_name, self._key))
            )
            self._step = "param"
        if self._wrapped:
            self._lit("</tool_call>")

    def _param_value(self) -> str:
        raw = self._until("</parameter>")
        if raw.startswith("\n"):
            raw = raw[1:]
        if raw.endswith("\n"):
            raw = raw[:-1]
        return raw
