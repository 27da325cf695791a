"""How deep a request's JSON may nest, on every API skin.

Owns: the one bound (``MAX_JSON_DEPTH``), measuring a parsed value's nesting without recursion, and the checks
that turn a body or a JSON-in-a-string field (tool-call arguments) nested past the bound into a 400 naming it.
Why a bound at all: parsing, validating, serializing and rendering JSON all recurse, each with its own limit
(Python's json module at ~1000 levels, pydantic's serializer at ~255, Jinja's ``tojson`` at what the stack has
left), and past any of them a request used to fail with a 500 or a dropped connection. No real request comes
near: OpenAI's structured outputs allow 10 levels of schema, and a chat body adds about 6.
Must not know: HTTP frameworks, engines.
"""

from __future__ import annotations

import json
from typing import Any

from kaiyuan.errors import InvalidRequest

__all__ = [
    "MAX_JSON_DEPTH",
    "check_depth",
    "check_text_depth",
    "deeper_than",
    "parse_bounded",
    "too_deep",
]

#: the deepest nesting of arrays and objects a request may carry (the body, or a JSON text inside it)
MAX_JSON_DEPTH = 128


def deeper_than(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON: dicts, lists, scalars) nests more than ``limit`` arrays/objects deep.
    Iterative, so that it works where the value is too deep for recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def too_deep(what: str, param: str | None) -> InvalidRequest:
    """The 400 for ``what`` (e.g. "the request body") nested past the bound."""
    return InvalidRequest(
        f"{what}: nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects; flatten it (no API request "
        "needs that depth)",
        param=param,
    )


def check_depth(value: Any, *, what: str = "the request body", param: str | None = None) -> None:
    """Raise ``InvalidRequest`` when ``value`` nests deeper than ``MAX_JSON_DEPTH``."""
    if deeper_than(value):
        raise too_deep(what, param)


def parse_bounded(text: str, *, what: str, param: str | None = None) -> Any:
    """``json.loads(text)``, refusing (``InvalidRequest``) a text nested deeper than ``MAX_JSON_DEPTH``; text that
    is not JSON raises ``json.JSONDecodeError`` as usual."""
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than Python's json module goes: far past the bound
        raise too_deep(what, param) from None
    check_depth(value, what=what, param=param)
    return value


def check_text_depth(text: str, *, what: str, param: str | None = None) -> None:
    """Raise ``InvalidRequest`` when ``text`` is JSON nested deeper than ``MAX_JSON_DEPTH`` (tool-call arguments,
    parsed later by the chat template); text that is not JSON passes (it is shown as text)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # too few brackets to be too deep: no parse
        return
    try:
        parse_bounded(text, what=what, param=param)
    except json.JSONDecodeError:
        return
