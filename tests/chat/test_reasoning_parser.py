"""ReasoningParser: think blocks split from the answer, whatever the chunking."""

from __future__ import annotations

import pytest

from kaiyuan.chat import ReasoningParser
from tests.chat._helpers import splits


def run(text_chunks: list[str], **kwargs: object) -> tuple[str, str]:
    parser = ReasoningParser(**kwargs)  # type: ignore[arg-type]
    pieces = [parser.feed(chunk) for chunk in text_chunks] + [parser.finish()]
    return "".join(r for r, _ in pieces), "".join(c for _, c in pieces)


CASES = [
    # (output, kwargs, reasoning, content)
    ("<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer is 4.", {}, "Step 1.\nStep 2.", "The answer is 4."),
    ("  <think>a</think>b", {}, "a", "b"),
    ("Plain answer, no thinking.\n", {}, "", "Plain answer, no thinking.\n"),
    ("  indented answer", {}, "", "  indented answer"),
    ("Use <think> tags like this: <think>x</think>", {}, "", "Use <think> tags like this: <think>x</think>"),
    ("<thi", {}, "", "<thi"),
    ("<think>cut off by max_tokens", {}, "cut off by max_tokens", ""),
    ("<think>\n\n</think>\n\nNo thoughts.", {}, "", "No thoughts."),
    ("Okay, so 2+2.\n</think>\n\nIt is 4.", {"starts_in_reasoning": True}, "Okay, so 2+2.", "It is 4."),
    ("\nstill thinking", {"starts_in_reasoning": True}, "still thinking", ""),
    (
        "a < b and </thin> is not the end</think>done",
        {"starts_in_reasoning": True},
        "a < b and </thin> is not the end",
        "done",
    ),
    (
        "<think:opensource>x</think:opensource>y",
        {"start": "<think:opensource>", "end": "</think:opensource>"},
        "x",
        "y",
    ),
    ("[THINK]plan[/THINK]answer", {"start": "[THINK]", "end": "[/THINK]"}, "plan", "answer"),
]


@pytest.mark.parametrize(("output", "kwargs", "reasoning", "content"), CASES)
def test_split_is_the_same_at_every_chunk_boundary(
    output: str, kwargs: dict[str, object], reasoning: str, content: str
) -> None:
    for chunks in splits(output):
        assert run(chunks, **kwargs) == (reasoning, content), chunks


def test_state_properties_follow_the_stream() -> None:
    parser = ReasoningParser(starts_in_reasoning=True)
    assert parser.in_reasoning and not parser.reasoning_done
    assert parser.feed("thinking</th") == ("thinking", "")
    assert parser.in_reasoning
    assert parser.feed("ink>\n\nAnswer") == ("", "Answer")
    assert parser.reasoning_done and not parser.in_reasoning


def test_held_back_text_is_released_as_soon_as_it_is_decided() -> None:
    parser = ReasoningParser()
    assert parser.feed("<thi") == ("", "")
    assert parser.feed("nk>Hmm ") == ("Hmm", "")
    assert parser.feed("ok") == (" ok", "")


def test_markers_must_be_non_empty() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ReasoningParser("", "</think>")
