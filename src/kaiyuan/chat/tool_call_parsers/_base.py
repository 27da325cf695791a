"""The streaming machinery every tool-call parser shares.

A parser is fed the answer text (reasoning already removed) in arbitrary pieces and returns, for each piece,
the plain content that is now certain and OpenAI-shaped ``ToolCallDelta`` objects (index, id and name once,
then argument fragments whose concatenation is the arguments' JSON text). Text that might still turn out to be
the start of a tool call is held back; whitespace around calls is dropped. The result does not depend on how
the text was split.

Subclasses describe one format: the markers that open a tool-call section and a resumable ``_section`` method
built from the small consuming primitives below (each either succeeds and consumes text, or raises
``_NeedMore`` having consumed nothing). A section that turns out not to be a call is given back as content.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kaiyuan.chat.reasoning_parser import partial_suffix
from kaiyuan.chat.tool_call_parsers._json_scan import (
    JsonScanError,
    JsonValueScanner,
    decode_string,
    scan_string,
    scan_value,
    skip_ws,
)
from kaiyuan.types import ToolCall, ToolCallDelta

__all__ = ["ToolCallParser", "ToolParseDelta", "coerce_param_value", "default_call_id"]

_ALPHABET = string.ascii_letters + string.digits
_NAME = re.compile(r"[\w.\-]{1,256}")  # what a function name may be (OpenAI: [a-zA-Z0-9_-]{1,64})


def default_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass
class ToolParseDelta:
    """What one piece of answer text turned into: plain content and tool-call deltas."""

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class _NeedMore(Exception):
    """More text is needed to decide (nothing was consumed)."""


class _Malformed(Exception):
    """The section is not a tool call in this format."""


@dataclass
class _Call:
    index: int
    id: str
    name: str
    arguments: str = ""


def coerce_param_value(raw: str, schema: dict[str, Any] | None) -> Any:
    """A parameter written as text (GLM, Hunyuan, Qwen3-Coder) turned into its JSON value, guided by its schema."""
    types = _schema_types(schema)
    if types == {"string"}:
        return raw
    text = raw.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = _loose_scalar(text, types)
    if types and "string" in types and not isinstance(value, str) and _json_type(value) not in types:
        return raw
    return value


def _loose_scalar(text: str, types: set[str]) -> Any:
    lowered = text.lower()
    if "boolean" in types and lowered in ("true", "false"):
        return lowered == "true"
    if "null" in types and lowered in ("none", "null"):
        return None
    return text


def _schema_types(schema: dict[str, Any] | None) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return {"string"}
    return set()


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


class ToolCallParser:
    """Base class: content/section state machine, call bookkeeping and consuming primitives."""

    name: ClassVar[str] = ""
    #: markers that open a tool-call section anywhere in the answer
    start_markers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, tools: list[dict[str, Any]] | None = None, *, id_factory: Callable[[], str] | None = None
    ) -> None:
        self._functions: dict[str, dict[str, Any]] = {}
        for tool in tools or []:
            function = tool.get("function", tool) if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                self._functions[function["name"]] = function
        self._new_id = id_factory or default_call_id
        self._buf = ""
        self._final = False
        self._in_section = False
        self._section_raw = ""
        self._section_first_call = 0
        self._calls: list[_Call] = []
        self._open: _Call | None = None
        self._pending_ws = ""
        self._section_ws = ""
        self._strip_leading = False
        self._out = ToolParseDelta()
        self._scanner: JsonValueScanner | None = None
        self._params_emitted = 0
        self._params_open = False

    # -- public -------------------------------------------------------------------------------------------

    def feed(self, text: str) -> ToolParseDelta:
        """Consume a piece of answer text; return the content and tool-call deltas now certain."""
        self._buf += text
        return self._run()

    def finish(self) -> ToolParseDelta:
        """End of output: flush held-back text; an unterminated call is closed with the arguments seen so far."""
        self._final = True
        return self._run()

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call parsed so far, complete (``arguments`` is the concatenation of the streamed fragments)."""
        return [ToolCall(name=c.name, arguments=c.arguments, id=c.id) for c in self._calls]

    # -- driver -------------------------------------------------------------------------------------------

    def _run(self) -> ToolParseDelta:
        self._out = ToolParseDelta()
        while True:
            if not self._in_section:
                start, hold = self._find_start()
                if start is None:
                    cut = len(self._buf) if self._final else len(self._buf) - hold
                    self._emit_content(self._buf[:cut])
                    self._buf = self._buf[cut:]
                    if self._final:
                        if not self._calls:
                            self._out.content += self._pending_ws
                        self._pending_ws = ""
                    break
                self._emit_content(self._buf[:start])
                self._section_ws, self._pending_ws = self._pending_ws, ""
                self._buf = self._buf[start:]
                self._in_section = True
                self._section_raw = ""
                self._section_first_call = len(self._calls)
                self._reset_section()
                continue
            try:
                self._section()
            except _NeedMore:
                if not self._final:
                    break
                self._close_open_call()
                if len(self._calls) == self._section_first_call:
                    self._give_back_section()
                else:
                    self._buf = ""
                    self._in_section = False
                continue
            except (_Malformed, JsonScanError, ValueError):
                self._close_open_call()
                if len(self._calls) == self._section_first_call:
                    self._give_back_section()
                else:
                    self._in_section = False
                    self._strip_leading = True
                continue
            self._in_section = False
            self._strip_leading = True
        out, self._out = self._out, ToolParseDelta()
        return out

    def _give_back_section(self) -> None:
        """The section was not a call: its text is content after all."""
        raw = self._section_raw
        if not raw:  # nothing consumed: take one character, so the same marker cannot start a section again
            raw, self._buf = self._buf[:1], self._buf[1:]
        self._in_section = False
        self._pending_ws = self._section_ws
        self._emit_content(raw, allow_leading_strip=False)

    def _find_start(self) -> tuple[int | None, int]:
        """Where the next tool-call section starts in the buffer, else ``(None, chars_to_hold_back)``."""
        best: int | None = None
        for marker in self.start_markers:
            idx = self._buf.find(marker)
            if idx >= 0 and (best is None or idx < best):
                best = idx
        if best is not None:
            return best, 0
        return None, max((partial_suffix(self._buf, m) for m in self.start_markers), default=0)

    def _emit_content(self, text: str, *, allow_leading_strip: bool = True) -> None:
        if not text:
            return
        if self._strip_leading and allow_leading_strip:
            text = text.lstrip()
            if not text:
                return
            self._strip_leading = False
        text = self._pending_ws + text
        body = text.rstrip()
        self._pending_ws = text[len(body) :]
        if body:
            self._out.content += body

    # -- call bookkeeping ---------------------------------------------------------------------------------

    def _begin_call(self, name: str, call_id: str | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise _Malformed(f"{name!r} is not a function name")
        self._close_open_call()
        call = _Call(index=len(self._calls), id=call_id or self._new_id(), name=name)
        self._calls.append(call)
        self._open = call
        self._params_emitted = 0
        self._out.tool_calls.append(ToolCallDelta(index=call.index, id=call.id, name=name, arguments=""))

    def _emit_args(self, fragment: str) -> None:
        if not fragment:
            return
        assert self._open is not None
        self._open.arguments += fragment
        last = self._out.tool_calls[-1] if self._out.tool_calls else None
        if last is not None and last.index == self._open.index:
            last.arguments += fragment
        else:
            self._out.tool_calls.append(ToolCallDelta(index=self._open.index, arguments=fragment))

    def _emit_param(self, key: str, value: Any) -> None:
        """One completed key/value parameter, as the next fragment of a JSON object."""
        prefix = "{" if self._params_emitted == 0 else ", "
        self._params_emitted += 1
        self._params_open = True
        self._emit_args(
            prefix + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)
        )

    def _end_params(self) -> None:
        self._emit_args("{}" if self._params_emitted == 0 else "}")
        self._params_open = False
        self._close_open_call()

    def _close_open_call(self) -> None:
        """Close the open call; one cut short still gets a JSON object (``{}``, or its parameters closed)."""
        if self._open is not None:
            if self._params_open:
                self._emit_args("}")
            elif not self._open.arguments:
                self._emit_args("{}")
        self._open = None
        self._scanner = None
        self._params_open = False

    def _param_schema(self, function: str, param: str) -> dict[str, Any] | None:
        props = self._functions.get(function, {}).get("parameters", {})
        if isinstance(props, dict):
            schema = (
                props.get("properties", {}).get(param) if isinstance(props.get("properties"), dict) else None
            )
            return schema if isinstance(schema, dict) else None
        return None

    # -- subclass hooks -----------------------------------------------------------------------------------

    def _reset_section(self) -> None:
        """Reset per-section state when a new section starts."""

    def _section(self) -> None:
        """Parse the section at the start of ``self._buf``; return when it is complete."""
        raise NotImplementedError

    # -- consuming primitives -----------------------------------------------------------------------------

    def _consume(self, n: int) -> None:
        self._section_raw += self._buf[:n]
        self._buf = self._buf[n:]

    def _lit(self, literal: str, *, ws: bool = True) -> None:
        """Consume optional whitespace and then ``literal``."""
        i = skip_ws(self._buf, 0) if ws else 0
        rest = self._buf[i:]
        if rest.startswith(literal):
            self._consume(i + len(literal))
            return
        if literal.startswith(rest) and not self._final:
            raise _NeedMore
        raise _Malformed(f"expected {literal!r}")

    def _try_lit(self, literal: str, *, ws: bool = True) -> bool:
        """Consume ``literal`` (after optional whitespace) if it comes next; ``False`` if something else does."""
        i = skip_ws(self._buf, 0) if ws else 0
        rest = self._buf[i:]
        if rest.startswith(literal):
            self._consume(i + len(literal))
            return True
        if literal.startswith(rest) and not self._final:
            raise _NeedMore
        return False

    def _until(self, literal: str) -> str:
        """Consume and return the text before ``literal``, and ``literal`` itself."""
        idx = self._buf.find(literal)
        if idx < 0:
            raise _NeedMore
        text = self._buf[:idx]
        self._consume(idx + len(literal))
        return text

    def _until_any(self, *literals: str) -> tuple[str, str]:
        """The text before the first of ``literals`` (consumed) and which literal ended it (not consumed)."""
        best: tuple[int, str] | None = None
        for lit in literals:
            idx = self._buf.find(lit)
            if idx >= 0 and (best is None or idx < best[0]):
                best = (idx, lit)
        if best is None:
            raise _NeedMore
        text = self._buf[: best[0]]
        self._consume(best[0])
        return text, best[1]

    def _json_string(self) -> str:
        i = skip_ws(self._buf, 0)
        if i == len(self._buf):
            raise _NeedMore
        end = scan_string(self._buf, i)
        if end is None:
            raise _NeedMore
        value = decode_string(self._buf, i, end)
        self._consume(end)
        return value

    def _json_raw_value(self) -> str:
        i = skip_ws(self._buf, 0)
        if i == len(self._buf):
            raise _NeedMore
        end = scan_value(self._buf, i, final=self._final)
        if end is None:
            raise _NeedMore
        raw = self._buf[i:end]
        self._consume(end)
        return raw

    def _stream_json_args(self) -> None:
        """Stream the arguments object of the open call as it arrives; return once it is complete."""
        if self._scanner is None:
            i = skip_ws(self._buf, 0)
            if i == len(self._buf):
                raise _NeedMore
            if self._buf[i] not in "{[":
                raise _Malformed("arguments must be a JSON object")
            self._consume(i)
            self._scanner = JsonValueScanner()
        n = self._scanner.feed(self._buf)
        fragment = self._buf[:n]
        self._consume(n)
        self._emit_args(fragment)
        if self._scanner.error:
            raise _Malformed("the arguments are not JSON")
        if not self._scanner.done:
            raise _NeedMore
        self._scanner = None

    # -- a JSON call object: {"name": ..., "arguments": {...}} in any key order ------------------------------

    _NAME_KEYS: ClassVar[tuple[str, ...]] = ("name",)
    _ARGS_KEYS: ClassVar[tuple[str, ...]] = ("arguments", "parameters")

    def _reset_call_object(self) -> None:
        self._obj_step = "open"
        self._obj_key = ""
        self._obj_name: str | None = None
        self._obj_args: str | None = None  # arguments seen before the name
        self._obj_args_done = False

    def _call_object(self) -> None:
        """Read one JSON call object, streaming its arguments once the name is known. Resumable."""
        while True:
            step = self._obj_step
            if step == "open":
                self._lit("{")
                self._obj_step = "key"
            elif step == "key":
                if self._try_lit("}"):
                    self._obj_step = "end"
                    continue
                self._obj_key = self._json_string()
                self._obj_step = "colon"
            elif step == "colon":
                self._lit(":")
                self._obj_step = "value"
            elif step == "value":
                self._obj_value()
            elif step == "stream":
                self._stream_json_args()
                self._obj_args_done = True
                self._obj_step = "after"
            elif step == "after":
                if self._try_lit(","):
                    self._obj_step = "key"
                    continue
                self._lit("}")
                self._obj_step = "end"
            else:  # end
                if self._obj_name is None:
                    raise _Malformed("no function name")
                if not self._obj_args_done:
                    self._emit_args("{}")
                self._close_open_call()
                return

    def _obj_value(self) -> None:
        key = self._obj_key
        if key in self._NAME_KEYS and self._obj_name is None:
            i = skip_ws(self._buf, 0)
            if i < len(self._buf) and self._buf[i] != '"':
                raise _Malformed("function name must be a string")
            name = self._json_string()
            self._obj_name = name
            self._begin_call(name)
            if self._obj_args is not None:
                self._emit_args(self._obj_args)
                self._obj_args_done = True
            self._obj_step = "after"
            return
        if key in self._ARGS_KEYS and not self._obj_args_done and self._obj_args is None:
            i = skip_ws(self._buf, 0)
            if i == len(self._buf):
                raise _NeedMore
            if self._buf[i] == '"':  # arguments sent as a JSON string holding JSON
                text = self._json_string()
                args = (
                    text
                    if isinstance(_loads(text), dict)
                    else json.dumps({"value": text}, ensure_ascii=False)
                )
                self._store_args(args)
                return
            if self._obj_name is not None:
                self._obj_step = "stream"
                return
            self._obj_args = self._json_raw_value()
            self._obj_step = "after"
            return
        self._json_raw_value()  # a key we do not use
        self._obj_step = "after"

    def _store_args(self, args: str) -> None:
        if self._obj_name is not None:
            self._emit_args(args)
            self._obj_args_done = True
        else:
            self._obj_args = args
        self._obj_step = "after"


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
