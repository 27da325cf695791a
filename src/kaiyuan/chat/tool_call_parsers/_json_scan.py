"""Incremental JSON scanning for tool-call parsers: find where a JSON value ends in text that is still arriving.

Owns only lexical scanning (strings, brackets, literals); values are decoded with ``json`` once complete.
"""

from __future__ import annotations

import json

__all__ = ["JsonScanError", "JsonValueScanner", "decode_string", "scan_string", "scan_value", "skip_ws"]

_WS = " \t\r\n"


class JsonScanError(ValueError):
    """The text cannot be JSON at this point."""


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def scan_string(text: str, i: int) -> int | None:
    """``text[i]`` is ``"``; the index just after the closing quote, or ``None`` if the string is not complete."""
    if i >= len(text) or text[i] != '"':
        raise JsonScanError("expected a string")
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        j += 1
    return None


def decode_string(text: str, i: int, end: int) -> str:
    value = json.loads(text[i:end])
    assert isinstance(value, str)
    return value


_LITERALS = ("true", "false", "null")
_NUMBER_CHARS = set("0123456789+-.eE")


def scan_value(text: str, i: int, *, final: bool = False) -> int | None:
    """The index just after the complete JSON value starting at ``text[i]`` (no leading whitespace), or ``None``.

    ``final`` says no more text will come (so a number running to the end is complete).
    """
    if i >= len(text):
        return None
    c = text[i]
    if c in "{[":
        scanner = JsonValueScanner()
        n = scanner.feed(text[i:])
        if scanner.error:
            raise JsonScanError(f"unbalanced {text[i + n]!r}")
        return i + n if scanner.done else None
    if c == '"':
        return scan_string(text, i)
    for lit in _LITERALS:
        if text.startswith(lit, i):
            return i + len(lit)
        if lit.startswith(text[i:]):
            return None
    if c in "-0123456789":
        j = i
        while j < len(text) and text[j] in _NUMBER_CHARS:
            j += 1
        if j == len(text) and not final:
            return None
        try:
            json.loads(text[i:j])
        except ValueError as exc:
            raise JsonScanError(f"bad number {text[i:j]!r}") from exc
        return j
    raise JsonScanError(f"unexpected {c!r}")


class JsonValueScanner:
    """Resumable scanner for one JSON object or array, fed in pieces.

    ``feed`` returns how many characters of the piece belong to the value; ``done`` turns true when the closing
    bracket has been consumed. Structure is checked only as far as brackets and strings go; ``json.loads`` on the
    collected text is the final word.
    """

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        self._started = False
        self.done = False
        self.error = False

    def feed(self, text: str) -> int:
        """How many characters of ``text`` belong to the value. At a character that cannot, stop before it and
        set ``error`` (so what was valid so far is the same however the text was split)."""
        for n, c in enumerate(text):
            if self.done or self.error:
                return n
            if not self._started:
                if c not in "{[":
                    self.error = True
                    return n
                self._started = True
                self._stack.append("}" if c == "{" else "]")
                continue
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
                continue
            if c == '"':
                self._in_string = True
            elif c in "{[":
                self._stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if not self._stack or self._stack[-1] != c:
                    self.error = True
                    return n
                self._stack.pop()
                if not self._stack:
                    self.done = True
                    return n + 1
        return len(text)
