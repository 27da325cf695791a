"""Tool calls written as key/value tags: GLM-4.5/4.6/4.7 and Tencent Hunyuan (Hy3).

* GLM: ``<tool_call>f<arg_key>k</arg_key><arg_value>v</arg_value>…</tool_call>`` (newlines between tags in 4.5/4.6)
* Hunyuan: ``<tool_calls:opensource><tool_call:opensource>f<tool_sep:opensource>`` + ``<arg_key:opensource>k``
  ``</arg_key:opensource><arg_value:opensource>v</arg_value:opensource>…</tool_call:opensource>…``
  ``</tool_calls:opensource>``

String values are written raw and others as JSON; the function's JSON schema says which is which. Each completed
parameter streams as the next fragment of the arguments object.
"""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed, coerce_param_value

__all__ = ["Glm45ToolParser", "HunyuanToolParser"]


class _KeyValueParser(ToolCallParser):
    section_begin: str | None = None
    section_end: str | None = None
    call_begin = "<tool_call>"
    call_end = "</tool_call>"
    name_end: str | None = None  # None: the name runs to the first key (or the call end)
    key_begin = "<arg_key>"
    key_end = "</arg_key>"
    value_begin = "<arg_value>"
    value_end = "</arg_value>"

    def _reset_section(self) -> None:
        self._step = "section" if self.section_begin else "call"

    def _section(self) -> None:
        if self._step == "section":
            assert self.section_begin is not None
            self._lit(self.section_begin, ws=False)
            self._step = "call"
        while True:
            if self._step == "call":
                if self.section_end is not None and self._try_lit(self.section_end):
                    return
                self._lit(self.call_begin, ws=self.section_begin is not None)
                self._step = "name"
            if self._step == "name":
                if self.name_end is not None:
                    name = self._until(self.name_end)
                else:
                    name, _ = self._until_any(self.key_begin, self.call_end)
                name = name.strip()
                if not name or any(c.isspace() for c in name):
                    raise _Malformed("bad function name")
                self._call_name = name
                self._begin_call(name)
                self._step = "key"
            if self._step == "key":
                if self._try_lit(self.call_end):
                    self._end_params()
                    if self.section_end is None:
                        return
                    self._step = "call"
                    continue
                self._lit(self.key_begin)
                self._step = "key-text"
            if self._step == "key-text":
                self._key = self._until(self.key_end).strip()
                self._step = "value"
            if self._step == "value":
                self._lit(self.value_begin)
                self._step = "value-text"
            raw = self._until(self.value_end)
            value = coerce_param_value(raw, self._param_schema(self._call_name, self._key))
            self._emit_param(self._key, value)
            self._step = "key"


class Glm45ToolParser(_KeyValueParser):
    name = "glm45"
    start_markers = ("<tool_call>",)


_HY = ":opensource"


class HunyuanToolParser(_KeyValueParser):
    name = "hunyuan"
    start_markers = (f"<tool_calls{_HY}>",)
    section_begin = f"<tool_calls{_HY}>"
    section_end = f"</tool_calls{_HY}>"
    call_begin = f"<tool_call{_HY}>"
    call_end = f"</tool_call{_HY}>"
    name_end = f"<tool_sep{_HY}>"
    key_begin = f"<arg_key{_HY}>"
    key_end = f"</arg_key{_HY}>"
    value_begin = f"<arg_value{_HY}>"
    value_end = f"</arg_value{_HY}>"
