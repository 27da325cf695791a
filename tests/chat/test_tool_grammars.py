"""Tool-call grammars: llama.cpp accepts them, and whatever a model writes under them parses back (with the
dialect's own parser) into calls of the offered functions whose arguments validate against their schemas."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from kaiyuan.chat import ChatTemplate, ResponseParser, dialect_by_name
from kaiyuan.chat._gbnf_length import longest_output
from kaiyuan.chat.dialects import Dialect
from kaiyuan.chat.tool_grammars import MAX_PARALLEL_CALLS, build_tool_call_grammar
from kaiyuan.errors import InvalidRequest, UnsupportedFeature
from tests.chat._gbnf_oracle import GrammarWalker
from tests.chat._helpers import WEATHER_TOOL, template_text
from tests.fixtures import tiny_gguf

BOOK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Book a restaurant table",
        "parameters": {
            "type": "object",
            "properties": {
                "restaurant": {"type": "string", "maxLength": 40},
                "party": {"type": "integer", "minimum": 1, "maximum": 12},
                "time": {"type": "string", "enum": ["18:00", "19:30", "21:00"]},
                "vip": {"type": "boolean"},
                "dishes": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                "contact": {
                    "type": "object",
                    "properties": {"phone": {"type": "string", "pattern": "^[0-9]{6}$"}},
                    "required": ["phone"],
                    "additionalProperties": False,
                },
            },
            "required": ["restaurant", "party", "time"],
            "additionalProperties": False,
        },
    },
}
NO_ARGS_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}
TOOLS = [WEATHER_TOOL, BOOK_TOOL, NO_ARGS_TOOL]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in TOOLS}


def _dialects() -> list[Dialect]:
    names = ["hermes", "qwen3", "qwen3-coder", "deepseek-r1", "deepseek-v3.1", "deepseek-v3.2", "glm45"]
    names += ["hunyuan", "kimi-k2", "llama3", "mistral", "ernie45", "generic"]
    out = [dialect_by_name(n) for n in names]
    out.append(dataclasses.replace(dialect_by_name("mistral"), variant="v3"))
    out.append(dataclasses.replace(dialect_by_name("glm45"), variant="compact"))
    return out


DIALECTS = _dialects()


def _id(d: Dialect) -> str:
    return d.name + (f"-{d.variant}" if d.variant else "")


@pytest.fixture(scope="module")
def walker() -> Iterator[GrammarWalker]:
    w = GrammarWalker()
    yield w
    w.close()


def _parse(dialect: Dialect, text: str) -> tuple[str, list[tuple[str, Any]]]:
    parser = ResponseParser(dialect, tools=TOOLS)
    deltas = [parser.feed(text), parser.finish()]
    return "".join(d.content + d.reasoning for d in deltas), [
        (c.name, json.loads(c.arguments)) for c in parser.tool_calls
    ]


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_random_outputs_under_the_grammar_are_valid_calls(
    walker: GrammarWalker, dialect: Dialect, parallel: bool
) -> None:
    grammar = build_tool_call_grammar(dialect, TOOLS, "required", parallel)
    assert walker.parses(grammar), grammar
    rng = random.Random(f"{_id(dialect)}-{parallel}")
    names_seen: set[str] = set()
    for _ in range(8):
        text = walker.random_output(grammar, rng)
        leftover, calls = _parse(dialect, text)
        assert leftover == "", (text, leftover)
        assert 1 <= len(calls) <= (MAX_PARALLEL_CALLS if parallel else 1), text
        for name, args in calls:
            jsonschema.validate(args, SCHEMAS[name])
            names_seen.add(name)
    assert len(names_seen) >= 2  # the walk reaches different functions


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
def test_named_function_is_the_only_one_called(walker: GrammarWalker, dialect: Dialect) -> None:
    choice = {"type": "function", "function": {"name": "book_table"}}
    grammar = dialect.tool_call_grammar(TOOLS, choice, parallel=False)
    rng = random.Random(_id(dialect))
    for _ in range(6):
        text = walker.random_output(grammar, rng)
        leftover, calls = _parse(dialect, text)
        assert leftover == "" and [name for name, _ in calls] == ["book_table"], text
        jsonschema.validate(calls[0][1], SCHEMAS["book_table"])


@pytest.mark.parametrize(
    ("template", "variant"),
    [
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "v3"),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "v11"),
        ("GLM-4.6.jinja", ""),
        ("GLM-4.7-Flash.jinja", "compact"),
    ],
)
def test_the_format_variant_comes_from_the_template(template: str, variant: str) -> None:
    assert ChatTemplate(template_text(template)).dialect.variant == variant


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([], "required", "at least one tool"),
        (TOOLS, "auto", "only built for"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not in tools"),
        (TOOLS, {"type": "function"}, "must be 'required'"),
        ([{"type": "function", "function": {}}], "required", "with a name"),
    ],
)
def test_bad_tool_choice_is_an_invalid_request(tools: list[Any], choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build_tool_call_grammar(dialect_by_name("hermes"), tools, choice, False)


def test_what_a_tag_format_cannot_enforce_is_refused_by_name() -> None:
    pattern = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
            },
        },
    }
    any_of = {"type": "function", "function": {"name": "g", "parameters": {"anyOf": [{"type": "object"}]}}}
    for dialect in ("glm45", "qwen3-coder", "hunyuan", "deepseek-v3.2"):
        with pytest.raises(UnsupportedFeature, match="'pattern'"):
            build_tool_call_grammar(dialect_by_name(dialect), [pattern], "required", False)
        with pytest.raises(UnsupportedFeature, match="anyOf"):
            build_tool_call_grammar(dialect_by_name(dialect), [any_of], "required", False)
    # formats whose arguments are JSON enforce the same schemas through the JSON-schema compiler
    assert build_tool_call_grammar(dialect_by_name("hermes"), [pattern], "required", False)


# -- the token budget -----------------------------------------------------------------------------------------------

NAMED_BOOK = {"type": "function", "function": {"name": "book_table"}}


def _smallest_budget(dialect: Dialect, tools: list[Any], choice: Any, parallel: bool, **kw: Any) -> int:
    """What the refusal of a too-small budget says a complete call needs."""
    with pytest.raises(InvalidRequest) as refused:
        build_tool_call_grammar(dialect, tools, choice, parallel, budget_tokens=1, **kw)
    assert refused.value.param == "max_tokens"
    match = re.search(r"needs (\d+);", str(refused.value))
    assert match, refused.value
    return int(match.group(1))


def _calls_within(dialect: Dialect, text: str, budget: int, parallel: bool) -> list[tuple[str, Any]]:
    leftover, calls = _parse(dialect, text)
    assert leftover == "", (text, leftover)
    assert 1 <= len(calls) <= (MAX_PARALLEL_CALLS if parallel else 1), text
    for name, args in calls:
        jsonschema.validate(args, SCHEMAS[name])
    return calls


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_budgeted_outputs_fit_and_are_valid_calls(
    walker: GrammarWalker, dialect: Dialect, parallel: bool
) -> None:
    smallest = _smallest_budget(dialect, TOOLS, "required", parallel)
    rng = random.Random(f"budget-{_id(dialect)}-{parallel}")
    for budget in (smallest, smallest + 25, 300, 1200):
        grammar = build_tool_call_grammar(dialect, TOOLS, "required", parallel, budget_tokens=budget)
        assert walker.parses(grammar), grammar
        longest = longest_output(grammar)
        assert longest is not None and longest <= budget - 1  # one token is kept for end-of-sequence
        for stop in (0.0, 0.0, 0.0, 0.1):  # 0.0: never end while the grammar allows going on
            text = walker.random_output(grammar, rng, stop=stop)
            assert len(text) <= budget - 1, (budget, text)
            _calls_within(dialect, text, budget, parallel)


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
def test_a_budget_too_small_for_any_call_is_refused_with_what_a_call_needs(dialect: Dialect) -> None:
    smallest = _smallest_budget(dialect, TOOLS, "required", False)
    assert build_tool_call_grammar(dialect, TOOLS, "required", False, budget_tokens=smallest)
    with pytest.raises(InvalidRequest, match="raise max_tokens") as refused:
        build_tool_call_grammar(dialect, TOOLS, "required", False, budget_tokens=smallest - 1)
    assert refused.value.param == "max_tokens"
    # a named function needs at least as much as the smallest of all
    named = _smallest_budget(dialect, TOOLS, NAMED_BOOK, False)
    assert named > smallest
    with pytest.raises(InvalidRequest, match="'book_table'"):
        build_tool_call_grammar(dialect, TOOLS, NAMED_BOOK, False, budget_tokens=named - 1)


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
def test_functions_that_cannot_fit_are_left_out(walker: GrammarWalker, dialect: Dialect) -> None:
    # room for a call of 'ping' (no parameters), not for the others
    budget = _smallest_budget(dialect, TOOLS, "required", False)
    grammar = build_tool_call_grammar(dialect, TOOLS, "required", True, budget_tokens=budget)
    rng = random.Random(_id(dialect))
    for _ in range(4):
        text = walker.random_output(grammar, rng, stop=0.0)
        assert [name for name, _ in _calls_within(dialect, text, budget, True)] == ["ping"]


def _most_calls(grammar: str) -> int:
    """How many calls the grammar's root allows (``call (sep m-call){0,k}``: 1 + k)."""
    extra = re.search(r"\{0,(\d+)\}", grammar.splitlines()[0])
    return 1 + (int(extra.group(1)) if extra else 0)


@pytest.mark.parametrize("dialect", DIALECTS, ids=_id)
def test_parallel_calls_are_as_many_as_fit_up_to_the_cap(walker: GrammarWalker, dialect: Dialect) -> None:
    # one call when only one fits, more as the budget grows, never more than MAX_PARALLEL_CALLS
    rng = random.Random(f"cap-{_id(dialect)}")
    smallest = _smallest_budget(dialect, TOOLS, "required", True)
    largest_call = _smallest_budget(dialect, TOOLS, NAMED_BOOK, True)  # book_table is the longest
    counts = []
    for budget in (smallest, 6 * largest_call, 20000):
        grammar = build_tool_call_grammar(dialect, TOOLS, "required", True, budget_tokens=budget)
        counts.append(_most_calls(grammar))
        for _ in range(3):
            text = walker.random_output(grammar, rng, stop=0.0, max_bytes=25000)
            assert len(_calls_within(dialect, text, budget, True)) <= counts[-1]
    assert counts[0] == 1 and 1 < counts[1] <= counts[2] == MAX_PARALLEL_CALLS, counts
    assert _most_calls(build_tool_call_grammar(dialect, TOOLS, "required", False, budget_tokens=20000)) == 1


def test_the_first_call_keeps_at_least_half_of_the_budget() -> None:
    # with parallel calls allowed, one call may still take half of the budget: a long string argument fits
    # (formats writing parameters as tags cap raw strings at 256 characters anyway)
    tool = {
        "type": "function",
        "function": {
            "name": "note",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    }
    for name in ("hermes", "llama3", "mistral", "deepseek-r1", "kimi-k2"):
        grammar = build_tool_call_grammar(dialect_by_name(name), [tool], "required", True, budget_tokens=2000)
        assert _most_calls(grammar) > 1
        longest_first = longest_output(grammar, "call")
        assert longest_first is not None and longest_first >= 1000, name


def test_without_a_budget_the_grammar_is_unchanged_in_kind() -> None:
    grammar = build_tool_call_grammar(dialect_by_name("hermes"), TOOLS, "required", True)
    assert f"{{0,{MAX_PARALLEL_CALLS - 1}}}" in grammar.splitlines()[0]
    with pytest.raises(InvalidRequest, match="positive integer"):
        build_tool_call_grammar(dialect_by_name("hermes"), TOOLS, "required", True, budget_tokens=0)


# -- markers written as the model's own tokens ----------------------------------------------------------------------

_HY = ":opensource"
MARKERS = (
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    *(f"<{tag}{_HY}>" for tag in ("tool_calls", "/tool_calls", "tool_call", "/tool_call", "tool_sep")),
    *(f"<{tag}{_HY}>" for tag in ("arg_key", "/arg_key", "arg_value", "/arg_value")),
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "[TOOL_CALLS]",
    "[ARGS]",
)
MARKER_DIALECTS = [d for d in DIALECTS if d.name not in ("llama3", "generic", "qwen3-coder", "deepseek-v3.2")]


@pytest.fixture(scope="module")
def marker_walker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrammarWalker]:
    """SmolLM2's vocabulary plus the families' tool-call markers as single tokens, as real vocabularies have."""
    path = tiny_gguf.make_tiny_gguf(
        tmp_path_factory.mktemp("markers") / "m.gguf", extra_special_tokens=MARKERS
    )
    w = GrammarWalker(path, markers=MARKERS)
    yield w
    w.close()


@pytest.mark.parametrize("dialect", MARKER_DIALECTS, ids=_id)
def test_markers_that_are_tokens_cost_one_token_each(marker_walker: GrammarWalker, dialect: Dialect) -> None:
    token_of = marker_walker.marker_tokens.get
    as_text = _smallest_budget(dialect, TOOLS, "required", True)
    as_tokens = _smallest_budget(dialect, TOOLS, "required", True, token_of=token_of)
    assert as_tokens < as_text
    rng = random.Random(f"markers-{_id(dialect)}")
    for budget in (as_tokens, as_tokens + 20, 250, 1000):
        grammar = build_tool_call_grammar(
            dialect, TOOLS, "required", True, budget_tokens=budget, token_of=token_of
        )
        assert "<[" in grammar and marker_walker.parses(grammar), grammar
        for stop in (0.0, 0.0, 0.1):
            text = marker_walker.random_output(grammar, rng, stop=stop)
            # the budget is in tokens: every token but a marker carries at least one character
            assert marker_walker.tokens <= budget - 1, (budget, marker_walker.tokens, text)
            _calls_within(dialect, text, budget, True)


# -- the budget in the model's own tokens (issue 14, item 4) ---------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_vocabulary() -> Iterator[Any]:
    from kaiyuan.chat._vocabulary import vocabulary
    from kaiyuan.engine.llama_cpp import LlamaCppEngine
    from tests.chat._gbnf_oracle import smollm2_path

    engine = LlamaCppEngine(
        str(smollm2_path()), flash_attn="off", n_ctx=256, n_parallel=1, n_threads=1, n_batch=64
    )
    yield vocabulary(engine)
    engine.close()


@pytest.mark.parametrize("dialect", ["hermes", "generic", "llama3", "qwen3-coder"])
def test_fixed_text_counts_in_the_models_tokens(
    walker: GrammarWalker, smollm2_vocabulary: Any, dialect: str
) -> None:
    d = dialect_by_name(dialect)
    spelled = {"token_of": smollm2_vocabulary.token_of, "tokens_of": smollm2_vocabulary.tokens_of}
    in_chars = _smallest_budget(d, TOOLS, "required", False)
    in_tokens = _smallest_budget(d, TOOLS, "required", False, **spelled)
    assert in_tokens < in_chars * 2 // 3, (in_tokens, in_chars)  # keys and markup take far fewer tokens
    for budget in (in_tokens, in_tokens + 20, 200):
        grammar = build_tool_call_grammar(d, TOOLS, "required", False, budget_tokens=budget, **spelled)
        assert walker.parses(grammar), grammar
        longest = longest_output(grammar)  # a token element is one unit
        assert longest is not None and longest <= budget - 1


def test_only_what_cannot_fit_is_refused(smollm2_vocabulary: Any) -> None:
    d = dialect_by_name("generic")
    weather = [WEATHER_TOOL]
    choice = {"type": "function", "function": {"name": WEATHER_TOOL["function"]["name"]}}
    spelled = {
        "token_of": smollm2_vocabulary.token_of,
        "tokens_of": smollm2_vocabulary.tokens_of,
        "longest_token": smollm2_vocabulary.longest_token,
    }
    guaranteed = _smallest_budget(
        d, weather, choice, False, token_of=spelled["token_of"], tokens_of=spelled["tokens_of"]
    )
    with pytest.raises(InvalidRequest, match=r"takes at least (\d+)") as refused:
        build_tool_call_grammar(d, weather, choice, False, budget_tokens=4, **spelled)
    fewest = int(re.findall(r"takes at least (\d+)", str(refused.value))[0])
    assert fewest <= guaranteed
    # Between the two the call may fit, so it is not refused: the tightest grammar (longer than the budget).
    for budget in range(fewest, guaranteed):
        grammar = build_tool_call_grammar(d, weather, choice, False, budget_tokens=budget, **spelled)
        assert grammar
    with pytest.raises(InvalidRequest, match="raise max_tokens"):
        build_tool_call_grammar(d, weather, choice, False, budget_tokens=fewest - 1, **spelled)
