"""DeepSeek tool calls, three generations.

* R1 and its distills: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f`` + newline +
  a fenced ```` ```json ```` block with the arguments + ``<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>``
* V3.1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>``
* V3.2 (DSML): ``<｜DSML｜function_calls>`` / ``<｜DSML｜invoke name="f">`` /
  ``<｜DSML｜parameter name="k" string="true|false">v</｜DSML｜parameter>``
"""

from __future__ import annotations

import json
import re

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, _Malformed, coerce_param_value

__all__ = ["DeepSeekR1ToolParser", "DeepSeekV31ToolParser", "DeepSeekV32ToolParser"]

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"

DSML = "｜DSML｜"


class _DeepSeekSection(ToolCallParser):
    start_markers = (CALLS_BEGIN,)

    def _reset_section(self) -> None:
        self._step = "open"

    def _section(self) -> None:
        if self._step == "open":
            self._lit(CALLS_BEGIN, ws=False)
            self._step = "call"
        while True:
            if self._step == "call":
                if self._try_lit(CALLS_END):
                    return
                self._lit(CALL_BEGIN)
                self._step = "header"
            self._call_body()
            self._lit(CALL_END)
            self._close_open_call()
            self._step = "call"

    def _call_body(self) -> None:
        raise NotImplementedError


class DeepSeekR1ToolParser(_DeepSeekSection):
    name = "deepseek_r1"

    def _call_body(self) -> None:
        if self._step == "header":
            self._until(SEP)  # the call type, "function"
            self._step = "name"
        if self._step == "name":
            name = self._until("\n").strip()
            if not name:
                raise _Malformed("empty function name")
            self._begin_call(name)
            self._step = "fence"
        if self._step == "fence":
            self._lit("```json")
            self._step = "args"
        if self._step == "args":
            self._stream_json_args()
            self._step = "fence-end"
        if self._step == "fence-end":
            self._lit("```")
            self._step = "call-end"


class DeepSeekV31ToolParser(_DeepSeekSection):
    name = "deepseek_v31"

    def _call_body(self) -> None:
        if self._step == "header":
            name = self._until(SEP).strip()
            if not name:
                raise _Malformed("empty function name")
            self._begin_call(name)
            self._step = "args"
        if self._step == "args":
            self._stream_json_args()
            self._step = "call-end"


_ATTR = re.compile(r'\s*string="(true|false)"\s*')


class DeepSeekV32ToolParser(ToolCallParser):
    name = "deepseek_v32"
    start_markers = (f"<{DSML}function_calls>",)

    def _reset_section(self) -> None:
        self._step = "open"

    def _section(self) -> None:
        if self._step == "open":
            self._lit(f"<{DSML}function_calls>", ws=False)
            self._step = "invoke"
        while True:
            if self._step == "invoke":
                if self._try_lit(f"</{DSML}function_calls>"):
                    return
                self._lit(f'<{DSML}invoke name="')
                self._step = "name"
            if self._step == "name":
                name = self._until('">').strip()
                if not name:
                    raise _Malformed("empty function name")
                self._call_name = name
                self._begin_call(name)
                self._step = "param"
            if self._step == "param":
                if self._try_lit(f"</{DSML}invoke>"):
                    self._end_params()
                    self._step = "invoke"
                    continue
                self._lit(f'<{DSML}parameter name="')
                self._step = "key"
            if self._step == "key":
                self._key = self._until('"')
                self._step = "attrs"
            if self._step == "attrs":
                attrs = self._until(">")
                match = _ATTR.fullmatch(attrs)
                self._is_string = match is None or match.group(1) == "true"
                self._step = "value"
            raw = self._until(f"</{DSML}parameter>")
            if self._is_string:
                value: object = raw
            else:
                try:
                    value = json.loads(raw)
                except ValueError:
                    value = coerce_param_value(raw, self._param_schema(self._call_name, self._key))
            self._emit_param(self._key, value)
            self._step = "param"
