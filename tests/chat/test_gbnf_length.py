"""Reading the longest output of a GBNF grammar from its text: each construct, and agreement with the JSON-schema
compiler's own measure of the grammars it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaiyuan.chat._gbnf_length import GbnfSyntaxError, longest_output, shortest_output
from kaiyuan.chat.grammars import _api, _gbnf, _ir

SCHEMAS = sorted((Path(__file__).parents[2] / "benchmarks" / "data" / "json_schemas").glob("*.json"))


@pytest.mark.parametrize(
    ("grammar", "longest"),
    [
        ('root ::= "abc"', 3),
        ('root ::= "a\\n\\t\\"\\\\\\x41\\u00e9\\U0001F600"', 8),  # every escape is one character
        ('root ::= "日本"', 2),  # characters, not bytes
        ("root ::= [a-z] [^\\]\\x00-\\x1F] .", 3),
        ("root ::= <[42]> <tool_call> !<[7]>", 3),  # a token is one unit, whatever its text
        ('root ::= "ab"{2,3} "c"{4} "d"{0,2} "e"?', 13),
        ('root ::= "a"* "b"', None),
        ('root ::= "a"+', None),
        ('root ::= "a"{2,}', None),
        ('root ::= ""* "x"', 1),  # repeating nothing is nothing
        ('root ::= "abc" | "de" | ("f" "ghij")', 5),
        ('root ::= item item\nitem ::= "[" "x"? "]"', 6),
        ('root ::= "(" root ")" | "x"', None),  # a cycle: as deep as the model likes
        ('root ::= a\na ::= b\nb ::= "xy"\n\n# a comment\n', 2),
    ],
)
def test_each_construct_is_measured(grammar: str, longest: int | None) -> None:
    assert longest_output(grammar) == longest


def test_another_rule_can_be_the_root() -> None:
    assert longest_output('root ::= "x" other\nother ::= "abcd"', "other") == 4


@pytest.mark.parametrize(
    "grammar",
    ['root ::= "open', "root ::= [abc", "root ::= missing", 'root ::= ("a"', 'root = "a"', 'root ::= "\\q"'],
)
def test_what_it_cannot_read_is_an_error(grammar: str) -> None:
    with pytest.raises(GbnfSyntaxError):
        longest_output(grammar)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_it_agrees_with_the_schema_compilers_measure(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    for budget in (None, 1, 40, 200):
        root, rules = _api._compile(schema, rule_prefix="p-", budget_tokens=budget, strict=False)
        text = _gbnf.write(rules, root)
        assert longest_output(text, root) == _ir.measure(_ir.Ref(root), rules.rules).hi


def test_the_schema_corpus_is_there() -> None:
    assert len(SCHEMAS) >= 10  # benchmarks/data/json_schemas: the agreement test above must not run empty


@pytest.mark.parametrize(
    ("grammar", "chars_only", "weighted"),
    [
        ('root ::= "abc"', 3, 30),
        ("root ::= <[42]> <tool_call> !<[7]>", 3, 3),  # tokens weigh token_units (1) each
        ('root ::= <[1]> "ab" | "abcdef"', 3, 21),  # the lighter branch depends on the weights
        ('root ::= "x" a\na ::= "y" a | <[5]>', 2, 11),  # recursion: the way out
        ('root ::= "a"{2,3} [b-c]? "d"*', 2, 20),
    ],
)
def test_shortest_output_weighs_characters_and_tokens(grammar: str, chars_only: int, weighted: int) -> None:
    assert shortest_output(grammar) == chars_only
    assert shortest_output(grammar, char_units=10, token_units=1) == weighted
