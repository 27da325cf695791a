"""The sampler's grammar check: the grammar masks the vocabulary only when the chain's own pick breaks it, and
greedy output is the same as masking first (llama-cpp-python's high-level API as the reference)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from tests.engine.conftest import THREADS

from kaiyuan.engine import GenerationRequest
from kaiyuan.engine.llama_cpp import _sampler
from kaiyuan.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PERSON = r"""root ::= "{" ws "\"name\"" ws ":" ws string ws "," ws "\"age\"" ws ":" ws [1-9] [0-9]? ws "}"
string ::= "\"" [A-Za-z ]{1,12} "\""
ws ::= [ ]?"""


@dataclass
class Picks:
    """What the grammar path of the samplers did: rejected picks, and masks of the whole vocabulary."""

    rejected: int = 0
    whole_masks: int = 0
    free: int = 0


@pytest.fixture
def picks(monkeypatch: pytest.MonkeyPatch) -> Picks:
    seen = Picks()
    allowed, whole = _sampler.Sampler._pick_allowed, _sampler.Sampler._pick_whole

    def pick_allowed(self, adjusted):  # type: ignore[no-untyped-def]
        seen.rejected += 1
        return allowed(self, adjusted)

    def pick_whole(self, adjusted, *, masked):  # type: ignore[no-untyped-def]
        if masked:
            seen.whole_masks += 1
        else:
            seen.free += 1
        return whole(self, adjusted, masked=masked)

    monkeypatch.setattr(_sampler.Sampler, "_pick_allowed", pick_allowed)
    monkeypatch.setattr(_sampler.Sampler, "_pick_whole", pick_whole)
    return seen


def _run(engine, prompt: str, grammar: str, max_tokens: int) -> tuple[list[int], str]:
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(prompt), sampling=GREEDY, grammar=grammar, max_tokens=max_tokens
        )
    )
    events = list(handle)
    return [e.token for e in events], "".join(e.text for e in events)


def test_a_grammar_the_model_follows_never_masks(engine, picks: Picks) -> None:
    free = engine.submit(
        GenerationRequest(prompt=engine.tokenize(CHAT.format("Name a fruit.")), sampling=GREEDY, max_tokens=8)
    )
    free_tokens = [e.token for e in free]
    literal = json.dumps(engine.detokenize(free_tokens))  # a GBNF string literal is a JSON string
    tokens, _ = _run(engine, CHAT.format("Name a fruit."), f"root ::= {literal}", len(free_tokens))
    assert tokens == free_tokens
    assert (picks.free, picks.rejected, picks.whole_masks) == (len(free_tokens), 0, 0)  # checked, none masked


def test_a_rejected_greedy_pick_is_decided_among_the_highest_candidates(engine, picks: Picks) -> None:
    _, text = _run(engine, CHAT.format("Is the sky green?"), 'root ::= ("yes" | "no") "."', 8)
    assert text in ("yes.", "no.")
    assert picks.rejected >= 1  # SmolLM2 answers in a sentence: its first pick breaks the grammar
    assert picks.whole_masks == 0  # "yes" and "no" are among its 1,024 likeliest tokens


def test_sampling_needs_top_k_allowed_candidates_or_masks_the_whole_vocabulary(engine, picks: Picks) -> None:
    prompt = engine.tokenize(CHAT.format("Is the sky green?"))
    for top_k, whole in ((0, True), (1, False)):  # without top-k the whole distribution counts
        picks.whole_masks = 0
        handle = engine.submit(
            GenerationRequest(
                prompt=prompt,
                sampling=SamplingParams(temperature=0.8, top_k=top_k, seed=3),
                grammar='root ::= ("yes" | "no") "."',
                max_tokens=8,
            )
        )
        assert "".join(e.text for e in handle) in ("yes.", "no.")
        assert (picks.whole_masks > 0) is whole, top_k


def test_greedy_with_a_grammar_matches_masking_first(engine, model_path: str) -> None:
    import llama_cpp

    prompt_text = CHAT.format("Describe a person as JSON.")
    llm = llama_cpp.Llama(model_path, n_ctx=512, n_threads=THREADS, verbose=False)
    try:
        prompt = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
        grammar = llama_cpp.LlamaGrammar.from_string(PERSON, verbose=False)
        expected: list[int] = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, grammar=grammar):
            if llm.token_eos() == token or len(expected) == 40:
                break
            expected.append(token)
    finally:
        llm.close()
    tokens, text = _run(engine, prompt_text, PERSON, 40)
    assert tokens == expected
    person = json.loads(text)
    assert set(person) == {"name", "age"}


def test_seeded_sampling_with_a_grammar_is_reproducible_and_valid(engine) -> None:
    sampling = SamplingParams(temperature=1.0, seed=7)
    texts = []
    for _ in range(2):
        handle = engine.submit(
            GenerationRequest(
                prompt=engine.tokenize(CHAT.format("Describe a person as JSON.")),
                sampling=sampling,
                grammar=PERSON,
                max_tokens=40,
            )
        )
        texts.append("".join(e.text for e in handle))
    assert texts[0] == texts[1]
    assert set(json.loads(texts[0])) == {"name", "age"}
