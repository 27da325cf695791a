"""LlamaCppEngine on the bundled SmolLM2: what a caller of the Engine protocol sees."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from tests.engine.conftest import THREADS

from kaiyuan.engine import Engine, GenerationRequest, ThinkBudget
from kaiyuan.errors import ContextOverflow, InvalidModelFile, InvalidRequest, Overloaded
from kaiyuan.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    "Once upon a time",
    "def fibonacci(n):",
    "The three primary colors are",
    CHAT.format("Name a fruit."),
]


def greedy(engine, text: str, n: int = 16, **kw) -> list[int]:
    handle = engine.submit(
        GenerationRequest(prompt=engine.tokenize(text), sampling=GREEDY, max_tokens=n, **kw)
    )
    return [event.token for event in handle]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_is_an_engine(engine) -> None:
    assert isinstance(engine, Engine)
    assert engine.n_ctx == 512 and engine.n_vocab == 49152


def test_tokenizer_round_trip(engine) -> None:
    text = "Hello, world! Ünïcödé 你好 <|im_end|>"
    tokens = engine.tokenize(text)
    assert engine.detokenize(tokens) == text
    assert engine.tokenize("<|im_end|>") == [2] and engine.is_eog(2)
    assert len(engine.tokenize("<|im_end|>", parse_special=False)) > 1
    assert engine.token_text(2) == "<|im_end|>"


def test_greedy_matches_llama_cpp_python(engine, model_path: str) -> None:
    import llama_cpp

    llm = llama_cpp.Llama(model_path, n_ctx=512, n_threads=THREADS, verbose=False)
    try:
        prompt = llm.tokenize(PROMPTS[0].encode(), add_bos=False, special=True)
        expected = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
            if llm.token_eos() == token or len(expected) == 16:
                break
            expected.append(token)
    finally:
        llm.close()
    assert engine.tokenize(PROMPTS[0]) == prompt
    assert greedy(engine, PROMPTS[0]) == expected


def test_concurrent_requests_match_single_runs(engine) -> None:
    singles = [greedy(engine, p) for p in PROMPTS]
    handles = [
        engine.submit(GenerationRequest(prompt=engine.tokenize(p), sampling=GREEDY, max_tokens=16))
        for p in PROMPTS
    ]
    together = [[e.token for e in h] for h in handles]
    assert all(h.finish_reason in ("stop", "length") for h in handles)
    # Separate per-sequence KV buffers keep batched decoding bit-exact here; compare the whole outputs.
    assert together == singles


def test_async_iteration_and_text(engine) -> None:
    async def run() -> tuple[str, list[int]]:
        handle = engine.submit(
            GenerationRequest(prompt=engine.tokenize(PROMPTS[3]), sampling=GREEDY, max_tokens=12)
        )
        events = [e async for e in handle]
        return "".join(e.text for e in events), [e.token for e in events]

    text, tokens = asyncio.run(run())
    assert text == engine.detokenize(tokens) and text.strip()


def test_seed_reproducibility(engine) -> None:
    def sample(seed: int) -> list[int]:
        params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        handle = engine.submit(
            GenerationRequest(prompt=engine.tokenize(PROMPTS[0]), sampling=params, max_tokens=16)
        )
        return [e.token for e in handle]

    assert sample(42) == sample(42)
    assert sample(42) != sample(7)


def test_max_tokens_gives_length(engine) -> None:
    handle = engine.submit(
        GenerationRequest(prompt=engine.tokenize(PROMPTS[0]), sampling=GREEDY, max_tokens=5)
    )
    assert len(list(handle)) == 5
    assert handle.finish_reason == "length"
    assert handle.generated_tokens == 5 and handle.prompt_tokens == len(engine.tokenize(PROMPTS[0]))
    zero = engine.submit(GenerationRequest(prompt=engine.tokenize(PROMPTS[0]), max_tokens=0))
    assert list(zero) == [] and zero.finish_reason == "length"


def test_stops_at_end_of_generation(engine) -> None:
    handle = engine.submit(GenerationRequest(prompt=engine.tokenize(CHAT.format("Say hi.")), sampling=GREEDY))
    events = list(handle)
    assert handle.finish_reason == "stop"
    assert events and not any(engine.is_eog(e.token) for e in events)


def test_context_end_gives_length(model_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=16, n_parallel=1, n_threads=THREADS) as small:
        prompt = small.tokenize(PROMPTS[0])
        handle = small.submit(GenerationRequest(prompt=prompt, sampling=GREEDY, max_tokens=100))
        assert len(list(handle)) == 16 - len(prompt)
        assert handle.finish_reason == "length"


def test_context_overflow_and_bad_requests(engine) -> None:
    with pytest.raises(ContextOverflow) as info:
        engine.submit(GenerationRequest(prompt=[1] * 512))
    assert info.value.prompt_tokens == 512 and info.value.context_length == 512
    assert "512" in info.value.message
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest(prompt=[]))
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest(prompt=[49152]))
    with pytest.raises(InvalidRequest, match="grammar"):
        engine.submit(GenerationRequest(prompt=[1], grammar="root ::= undefined-rule"))
    assert engine.stats().running == 0


def test_logprobs(engine) -> None:
    params = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3)
    handle = engine.submit(
        GenerationRequest(prompt=engine.tokenize(PROMPTS[2]), sampling=params, max_tokens=4)
    )
    events = list(handle)
    for event in events:
        assert event.logprob is not None and event.logprob <= 0
        assert len(event.top_logprobs) == 3
        texts = [t for t, _ in event.top_logprobs]
        values = [lp for _, lp in event.top_logprobs]
        assert values == sorted(values, reverse=True)
        # Greedy picks the most likely token.
        assert texts[0] == engine.token_text(event.token) and values[0] == pytest.approx(event.logprob)


def test_cancel_frees_the_slot(model_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS) as eng:
        handle = eng.submit(
            GenerationRequest(prompt=eng.tokenize(PROMPTS[0]), sampling=GREEDY, max_tokens=200)
        )
        queued = eng.submit(GenerationRequest(prompt=eng.tokenize(PROMPTS[1]), sampling=GREEDY, max_tokens=3))
        events = iter(handle)
        next(events)
        assert eng.stats().running == 1 and eng.stats().waiting == 1
        at_cancel = handle.generated_tokens
        handle.cancel()
        list(events)
        assert handle.finish_reason == "cancelled"
        assert handle.generated_tokens <= at_cancel + 1  # at most the step already in flight
        # The waiting request gets the freed slot and completes.
        assert len(list(queued)) == 3 and queued.finish_reason == "length"
        wait_for(lambda: eng.stats().running == 0)


def test_overloaded_when_queue_full(model_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(
        model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS, max_queue=1
    ) as eng:
        prompt = eng.tokenize(PROMPTS[0])
        running = eng.submit(GenerationRequest(prompt=prompt, max_tokens=200))
        waiting = eng.submit(GenerationRequest(prompt=prompt, max_tokens=200))
        with pytest.raises(Overloaded) as info:
            eng.submit(GenerationRequest(prompt=prompt, max_tokens=200))
        assert info.value.retry_after > 0
        running.cancel()
        waiting.cancel()
        list(running)
        list(waiting)
        assert waiting.finish_reason == "cancelled"
        # Room again once the queue drained.
        assert len(list(eng.submit(GenerationRequest(prompt=prompt, max_tokens=2)))) == 2


def test_grammar_constrains_output(engine) -> None:
    grammar = 'root ::= ("yes" | "no") "."'
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(CHAT.format("Is the sky green?")), sampling=GREEDY, grammar=grammar
        )
    )
    text = "".join(e.text for e in handle)
    assert text in ("yes.", "no.")
    assert handle.finish_reason == "stop"


def test_grammar_after_trigger(engine) -> None:
    prompt = engine.tokenize(PROMPTS[0])
    free = greedy(engine, PROMPTS[0], n=12)
    trigger = engine.detokenize(free[:3])  # text the model writes on its own
    grammar = 'root ::= "ANSWER: " [0-9] [0-9] [0-9]'
    handle = engine.submit(
        GenerationRequest(
            prompt=prompt, sampling=GREEDY, grammar=grammar, grammar_after=trigger, max_tokens=40
        )
    )
    events = list(handle)
    text = "".join(e.text for e in events)
    # Free text up to the trigger (the same as without a grammar), then the grammar's language.
    assert [e.token for e in events[:3]] == free[:3]
    assert re.fullmatch(re.escape(trigger) + r"\s*ANSWER: [0-9]{3}", text), text
    assert handle.finish_reason == "stop"


def test_think_budget_forces_end_text(engine) -> None:
    budget = ThinkBudget(max_tokens=4, end_text="</think>")
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(PROMPTS[0]), sampling=GREEDY, max_tokens=10, think_budget=budget
        )
    )
    events = list(handle)
    assert [e.forced for e in events[:4]] == [False] * 4
    forced = [e for e in events if e.forced]
    assert "".join(e.text for e in forced) == "</think>"
    assert events[4 : 4 + len(forced)] == forced
    assert len(events) == 10 and not any(e.forced for e in events[4 + len(forced) :])  # generation goes on
    assert handle.generated_tokens == 10


def test_think_budget_with_grammar_after(engine) -> None:
    """The chat layer's combination: free thinking, a forced close, then structured output."""
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(CHAT.format("Pick a number.")),
            sampling=GREEDY,
            think_budget=ThinkBudget(max_tokens=3),
            grammar='root ::= "{\\"n\\": " [1-9] "}"',
            grammar_after="</think>",
            max_tokens=40,
        )
    )
    text = "".join(e.text for e in handle)
    answer = text.split("</think>", 1)[1]
    assert re.fullmatch(r'\s*\{"n": [1-9]\}', answer), text


def test_end_of_generation_while_an_answer_is_owed_closes_the_thinking(engine) -> None:
    """SmolLM2 never writes </think>: it answers and stops. With a grammar owed after </think> (a forced tool call
    after thinking), its end-of-generation token closes the thinking instead, and the grammar's answer follows."""
    prompt = engine.tokenize(CHAT.format("What is 2+2?"))
    free = greedy(engine, CHAT.format("What is 2+2?"), n=64)
    assert len(free) < 64 and "</think>" not in engine.detokenize(
        free
    )  # it ends on its own, without </think>
    for budget in (None, ThinkBudget(max_tokens=500)):
        handle = engine.submit(
            GenerationRequest(
                prompt=prompt,
                sampling=GREEDY,
                think_budget=budget,
                grammar='root ::= "{\\"ok\\": true}"',
                grammar_after="</think>",
                max_tokens=120,
            )
        )
        events = list(handle)
        text = "".join(e.text for e in events)
        thinking, answer = text.split("</think>", 1)
        assert thinking == engine.detokenize(free)  # the free text is what the model wrote, unchanged
        assert re.fullmatch(r'\s*\{"ok": true\}', answer), text
        assert handle.finish_reason == "stop" and any(e.forced for e in events)
    # without a grammar nothing is owed: the end-of-generation token ends the answer as usual
    plain = engine.submit(GenerationRequest(prompt=prompt, sampling=GREEDY, think_budget=ThinkBudget(500)))
    assert [e.token for e in plain] == free


def test_think_budget_zero_closes_at_once(engine) -> None:
    budget = ThinkBudget(max_tokens=0, end_text="</think>")
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(PROMPTS[0]), sampling=GREEDY, max_tokens=12, think_budget=budget
        )
    )
    events = list(handle)
    n_forced = len(engine.tokenize("</think>"))
    assert all(e.forced for e in events[:n_forced]) and not any(e.forced for e in events[n_forced:])


def test_utf8_pieces_are_held_until_complete(engine) -> None:
    handle = engine.submit(
        GenerationRequest(
            prompt=engine.tokenize(CHAT.format("Write the word 'hello' in Chinese and Japanese.")),
            sampling=GREEDY,
            max_tokens=40,
        )
    )
    events = list(handle)
    assert "".join(e.text for e in events) == engine.detokenize([e.token for e in events])
    assert not any("\ufffd" in e.text for e in events)
    assert any(e.text == "" for e in events)  # some token ended inside a character: its bytes were held back


def test_bad_model_file(tmp_path) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InvalidModelFile):
        LlamaCppEngine(str(bad), flash_attn="off", n_ctx=64, n_parallel=1, n_threads=1)
    with pytest.raises(InvalidModelFile, match="not a GGUF"):
        (tmp_path / "x.gguf").write_text("hello")
        LlamaCppEngine(str(tmp_path / "x.gguf"), flash_attn="off", n_ctx=64, n_parallel=1, n_threads=1)


def test_logit_bias_bans_and_forces(engine) -> None:
    prompt = engine.tokenize("The capital of France is")
    free = greedy(engine, "The capital of France is", n=3)

    def run(bias: dict[int, float]) -> list[int]:
        params = SamplingParams(temperature=0.0, logit_bias=bias)
        return [
            e.token for e in engine.submit(GenerationRequest(prompt=prompt, sampling=params, max_tokens=3))
        ]

    assert run({free[0]: -100.0})[0] != free[0]
    assert run({42: 100.0}) == [42, 42, 42]


def test_penalties_reduce_repetition(engine) -> None:
    from collections import Counter

    prompt = engine.tokenize("yes yes yes yes yes yes yes yes")

    def most_repeated(**penalties: float) -> int:
        params = SamplingParams(temperature=0.0, **penalties)
        tokens = [
            e.token for e in engine.submit(GenerationRequest(prompt=prompt, sampling=params, max_tokens=12))
        ]
        return Counter(tokens).most_common(1)[0][1]

    assert most_repeated() > 1
    assert most_repeated(presence_penalty=2.0) == 1
    assert most_repeated(repetition_penalty=1.5) == 1


def test_event_loop_keeps_running_during_decode(engine) -> None:
    """Four async streams on one event loop, plus a ticker: ``llama_decode`` releases the GIL, so the loop keeps
    ticking *during* decode steps, not only between them."""

    async def run() -> tuple[int, list[int]]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        async def consume(text: str) -> int:
            handle = engine.submit(
                GenerationRequest(prompt=engine.tokenize(text), sampling=GREEDY, max_tokens=24)
            )
            return len([e async for e in handle])

        tick = asyncio.create_task(ticker())
        counts = await asyncio.gather(*(consume(p) for p in PROMPTS))
        stop.set()
        await tick
        return ticks, counts

    steps_before = engine.scheduler.steps
    ticks, counts = asyncio.run(run())
    steps = engine.scheduler.steps - steps_before
    assert all(n > 0 for n in counts)
    # With the GIL held through each decode, the ticker could run about once per step.
    assert ticks > 2 * steps, (ticks, steps)
