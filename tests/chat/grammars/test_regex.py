"""``pattern`` -> grammar: the strings llama.cpp lets through are exactly the ones Python's ``re`` full-matches
(for printable ASCII), random outputs always match, and what cannot be enforced is refused with its path."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from kaiyuan.chat.grammars import json_schema_grammar
from kaiyuan.errors import InvalidRequest, UnsupportedFeature

CASES: list[tuple[str, list[str]]] = [
    (r"^\d{3}-\d{4}$", ["555-1234", "55-1234", "555-12345", "abc-defg", "555 1234"]),
    (r"[A-Z][a-z]+", ["Hello", "hello", "H", "HeLlo", "Zz"]),
    (r"^(foo|bar)+$", ["foo", "foobar", "barbarfoo", "", "fo", "foob"]),
    (r"^a*b?c{2,3}$", ["cc", "acc", "aaabccc", "bcccc", "abc", "c"]),
    (
        r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
        ["a@b.cn", "a b@c.de", "x@y.z", "@b.cn", "first.last@mail.example.org"],
    ),
    (r"^\w+$", ["abc_12", "ab-c", "", "Z"]),
    (r"^\S+$", ["a-b!", "a b", "x", ""]),
    (r"^\D{2}$", ["ab", "a1", "!?", "12"]),
    (r"^\W$", ["!", "a", "_", " "]),
    (r"^[\w.-]+$", ["a.b-c_d", "a b", "..."]),
    (r"^[A-Fa-f0-9]{2}(:[A-Fa-f0-9]{2}){5}$", ["00:1A:2b:3C:4d:5E", "00:1A:2b:3C:4d", "0g:1A:2b:3C:4d:5E"]),
    (r"^(?:\+?86)?1[3-9]\d{9}$", ["13812345678", "+8613812345678", "8612345678901", "1381234567"]),
    (r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$", ["v1.2.3", "v10.0.1-rc.1", "1.2.3", "v1.2", "v1.2.3-"]),
    (r"^\.\*\+\?\(\)\[\]\{\}\\\/\|\^\$$", [r".*+?()[]{}\/|^$", "x"]),
    (r"^a.c$", ["abc", "a c", "a\nc", "ac", 'a"c']),
    (r'^[^"]*$', ["", "no quotes here", 'a"b']),
    (r"^x{2}y{0,}z{1,}$", ["xxz", "xxyyyzz", "xz", "xxy"]),
    (r"^(?P<year>\d{4})-(?:\d\d)$", ["2024-05", "24-05"]),
    (r"^[-a]$", ["-", "a", "b"]),
    (r"^[a-]$", ["-", "a", "b"]),
    (r"^[\x41-\x43]\u0044$", ["AD", "CD", "DD"]),
    (r"^(a|)b$", ["ab", "b", "aab"]),
    (r"^\t?[ ]*x$", ["x", "\tx", "   x", "\t \tx"]),
    (r"colou?r", ["color", "colour", "colr"]),
    (r"^[a-z]+(?:-[a-z]+)*$", ["kebab-case-name", "kebab--case", "-x", "abc"]),
    (r"^(?:[01]\d|2[0-3]):[0-5]\d$", ["23:59", "24:00", "07:05", "7:05"]),
    (r'^"[^"\\]*"$', ['"quoted"', '"in"side"', '""']),
]


def _grammar(pattern: str, **extra: Any) -> str:
    return json_schema_grammar({"type": "string", "pattern": pattern, **extra})


@pytest.mark.parametrize(("pattern", "samples"), CASES, ids=[c[0] for c in CASES])
def test_llama_cpp_accepts_exactly_the_full_matches(gbnf: Any, pattern: str, samples: list[str]) -> None:
    grammar = _grammar(pattern)
    assert gbnf.parses(grammar), grammar
    for sample in samples:
        assert gbnf.accepts(grammar, json.dumps(sample)) == bool(re.fullmatch(pattern, sample)), sample


@pytest.mark.parametrize(("pattern", "samples"), CASES, ids=[c[0] for c in CASES])
def test_random_outputs_match(gbnf: Any, pattern: str, samples: list[str]) -> None:
    rng = random.Random(pattern)
    for budget in (40, 400):
        grammar = json_schema_grammar({"type": "string", "pattern": pattern}, budget_tokens=budget)
        for _ in range(5):
            value = json.loads(gbnf.random_output(grammar, rng, stop_bias=0.3, max_chars=3000))
            assert re.search(pattern, value), (pattern, value)


def test_ecma_named_groups(gbnf: Any) -> None:
    grammar = _grammar(r"^(?<year>\d{4})-(?<month>\d\d)$")
    assert gbnf.accepts(grammar, '"2024-05"') and not gbnf.accepts(grammar, '"24-05"')


def test_cjk_class(gbnf: Any) -> None:
    grammar = _grammar(r"^[\u4e00-\u9fa5]{2,4}$")
    assert gbnf.accepts(grammar, json.dumps("张三", ensure_ascii=False))
    assert not gbnf.accepts(grammar, json.dumps("张", ensure_ascii=False))
    assert not gbnf.accepts(grammar, json.dumps("ab"))


def test_pattern_with_max_length_shortens_repetitions(gbnf: Any) -> None:
    pattern = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
    grammar = _grammar(pattern, maxLength=12)
    rng = random.Random(1)
    for _ in range(20):
        value = json.loads(gbnf.random_output(grammar, rng, stop_bias=0.0, max_chars=200))
        assert re.fullmatch(pattern, value) and len(value) <= 12, value


def test_pattern_with_min_length_on_one_class(gbnf: Any) -> None:
    grammar = _grammar(r"^[A-Z]\d+$", minLength=4, maxLength=6)
    assert gbnf.accepts(grammar, '"A123"') and gbnf.accepts(grammar, '"B12345"')
    assert not gbnf.accepts(grammar, '"A12"') and not gbnf.accepts(grammar, '"A123456"')


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?=a)b",
        r"a(?!b)",
        r"(?<=a)b",
        r"(a)\1",
        r"\bword\b",
        r"(?i)abc",
        r"a^b",
        r"a$b",
        r"\p{L}+",
        r"[[:alpha:]]",
        r"a++",
        r"(^a)*",
    ],
)
def test_unenforceable_patterns_are_refused_with_their_path(pattern: str) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
    with pytest.raises(UnsupportedFeature) as info:
        json_schema_grammar(schema)
    assert "'pattern'" in info.value.message and "#/properties/code" in info.value.message
    assert info.value.param == "response_format"


@pytest.mark.parametrize("pattern", [r"(abc", r"[a-", r"a{3,1}", r"*a", r"abc)", r"[z-a]"])
def test_broken_patterns_are_invalid_requests(pattern: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _grammar(pattern)
    assert not isinstance(info.value, UnsupportedFeature)
    assert "pattern" in info.value.message


def test_minlength_that_no_pattern_string_reaches_is_refused() -> None:
    with pytest.raises(UnsupportedFeature, match="minLength"):
        _grammar(r"^(ab|cd)$", minLength=3)
