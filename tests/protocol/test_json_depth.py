"""The nesting bound on request JSON: measured without recursion, refused with a 400 that names what to do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol._json_depth import (
    MAX_JSON_DEPTH,
    check_depth,
    check_text_depth,
    deeper_than,
    parse_bounded,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of alternating objects and arrays around ``leaf``, built without recursion."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [0, 1, MAX_JSON_DEPTH])
def test_up_to_the_bound_passes(depth: int) -> None:
    assert not deeper_than(nested(depth))
    check_depth(nested(depth))
    text = json.dumps(nested(depth))
    assert parse_bounded(text, what="x") == nested(depth)
    check_text_depth(text, what="x")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
def test_past_the_bound_is_a_400_however_deep(depth: int) -> None:
    if depth <= 5_000:  # a parsed value (json.dumps itself recurses, so the deepest is built as text only)
        assert deeper_than(nested(depth))
        with pytest.raises(InvalidRequest, match="flatten it"):
            check_depth(nested(depth), what="the request body")
    text = "[" * depth + "]" * depth
    with pytest.raises(InvalidRequest) as refused:
        check_text_depth(text, what="tool call arguments", param="messages[1].tool_calls[0]")
    assert refused.value.param == "messages[1].tool_calls[0]"
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in refused.value.message


def test_wide_values_are_not_deep() -> None:
    wide = {"k": [[1] * 10 for _ in range(10_000)]}
    assert not deeper_than(wide, limit=3)
    assert deeper_than(wide, limit=2)


def test_text_that_is_not_json_passes() -> None:
    check_text_depth("[]" * 1000 + " and then prose", what="tool call arguments")  # many brackets, not deep
    with pytest.raises(json.JSONDecodeError):
        parse_bounded("{not json", what="x")
