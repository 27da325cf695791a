"""The sampler's grammar check: the grammar masks the vocabulary only when the chain's own pick breaks it, and
greedy output is the same as masking first (llama-cpp-python's high-level API as the reference)."""

from __future__ import annotations

import json

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


@pytest.fixture
def masked_picks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for every pick of a grammar request, whether the grammar had to mask the vocabulary."""
    seen: list[bool] = []
    pick = _sampler.Sampler._pick

    def recording(self, ctx, index, *, masked):  # type: ignore[no-untyped-def]
        seen.append(masked)
        return pick(self, ctx, index, masked=masked)

    monkeypatch.setattr(_sampler.Sampler, "_pick", recording)
    return seen


def _run(engine, prompt: str, grammar: str, max_tokens: int) -> tuple[list[int], str]:
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(prompt), sampling=GREEDY, grammar=grammar, max_tokens=max_tokens
        )
    )
    events = list(handle)
    return [e.token for e in events], "".join(e.text for e in events)


def test_a_grammar_the_model_follows_never_masks(engine, masked_picks: list[bool]) -> None:
    free = engine.submit(
        GenerationRequest(prompt=engine.tokenize(CHAT.format("Name a fruit.")), sampling=GREEDY, max_tokens=8)
    )
    free_tokens = [e.token for e in free]
    literal = json.dumps(engine.detokenize(free_tokens))  # a GBNF string literal is a JSON string
    tokens, _ = _run(engine, CHAT.format("Name a fruit."), f"root ::= {literal}", len(free_tokens))
    assert tokens == free_tokens
    assert masked_picks == [False] * len(free_tokens)  # every pick checked, none masked


def test_a_rejected_pick_is_sampled_again_under_the_mask(engine, masked_picks: list[bool]) -> None:
    _, text = _run(engine, CHAT.format("Is the sky green?"), 'root ::= ("yes" | "no") "."', 8)
    assert text in ("yes.", "no.")
    assert True in masked_picks  # SmolLM2 answers in a sentence: its first pick breaks the grammar


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
