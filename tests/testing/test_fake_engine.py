"""FakeEngine: the deterministic engine the chat and server tests drive."""

from __future__ import annotations

import asyncio
import time

import pytest

from kaiyuan.engine import Engine, GenerationRequest, ThinkBudget
from kaiyuan.errors import ContextOverflow, InvalidRequest, Overloaded
from kaiyuan.testing import FakeEngine
from kaiyuan.types import SamplingParams


@pytest.fixture
def engine():
    eng = FakeEngine(["Hello", ",", " world", "!"], n_ctx=64)
    yield eng
    eng.close()


def test_is_an_engine(engine: FakeEngine) -> None:
    assert isinstance(engine, Engine)


def test_tokenizer_round_trips(engine: FakeEngine) -> None:
    text = "héllo <s> wörld 你好 </s>"
    tokens = engine.tokenize(text)
    assert engine.detokenize(tokens) == text
    assert tokens.count(256) == 1 and tokens.count(257) == 1
    assert engine.is_eog(257) and not engine.is_eog(256)
    assert engine.tokenize("<s>", parse_special=False) == list(b"<s>")
    assert engine.tokenize("a", add_special=True) == [256, ord("a")]


def test_streams_script_and_stops(engine: FakeEngine) -> None:
    handle = engine.submit(GenerationRequest(prompt=engine.tokenize("hi")))
    events = list(handle)
    assert [e.text for e in events] == ["Hello", ",", " world", "!"]
    assert engine.detokenize([e.token for e in events]) == "Hello, world!"
    assert handle.finish_reason == "stop"
    assert handle.prompt_tokens == 2 and handle.generated_tokens == 4


def test_max_tokens_gives_length(engine: FakeEngine) -> None:
    handle = engine.submit(GenerationRequest(prompt=[1, 2], max_tokens=2))
    assert [e.text for e in handle] == ["Hello", ","]
    assert handle.finish_reason == "length"


def test_context_end_gives_length() -> None:
    eng = FakeEngine(["a"] * 10, n_ctx=8)
    try:
        handle = eng.submit(GenerationRequest(prompt=[1, 2, 3, 4, 5]))
        assert len(list(handle)) == 3
        assert handle.finish_reason == "length"
    finally:
        eng.close()


def test_context_overflow(engine: FakeEngine) -> None:
    with pytest.raises(ContextOverflow) as info:
        engine.submit(GenerationRequest(prompt=[1] * 64))
    assert info.value.prompt_tokens == 64 and info.value.context_length == 64
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest(prompt=[]))


def test_script_function_sees_request() -> None:
    eng = FakeEngine(lambda req: [f"{len(req.prompt)} tokens"])
    try:
        assert [e.text for e in eng.submit(GenerationRequest(prompt=[5, 6, 7]))] == ["3 tokens"]
    finally:
        eng.close()


def test_async_iteration(engine: FakeEngine) -> None:
    async def collect() -> list[str]:
        handle = engine.submit(GenerationRequest(prompt=[1]))
        return [e.text async for e in handle]

    assert asyncio.run(collect()) == ["Hello", ",", " world", "!"]


def test_cancel_frees_slot() -> None:
    eng = FakeEngine(["x"] * 1000, delay=0.01, slots=1)
    try:
        handle = eng.submit(GenerationRequest(prompt=[1]))
        it = iter(handle)
        next(it)
        assert eng.stats().running == 1
        at_cancel = handle.generated_tokens
        handle.cancel()
        list(it)
        assert handle.finish_reason == "cancelled"
        assert handle.generated_tokens <= at_cancel + 1  # at most the step already in flight
        deadline = time.monotonic() + 2
        while eng.stats().running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert eng.stats().running == 0
    finally:
        eng.close()


def test_overloaded_when_queue_full() -> None:
    eng = FakeEngine(["x"] * 1000, delay=0.01, slots=1, max_queue=1)
    try:
        first = eng.submit(GenerationRequest(prompt=[1]))
        second = eng.submit(GenerationRequest(prompt=[1]))
        with pytest.raises(Overloaded) as info:
            eng.submit(GenerationRequest(prompt=[1]))
        assert info.value.retry_after > 0
        first.cancel()
        second.cancel()
        assert first.finish_reason in (None, "cancelled")
    finally:
        eng.close()


def test_slots_run_concurrently() -> None:
    eng = FakeEngine(["a"] * 20, delay=0.02, slots=4)
    try:
        handles = [eng.submit(GenerationRequest(prompt=[1])) for _ in range(5)]
        deadline = time.monotonic() + 5
        while eng.stats().running < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        stats = eng.stats()
        assert (stats.running, stats.waiting) == (4, 1)
        assert all(len(list(h)) == 20 for h in handles)
        assert eng.stats().generated_tokens == 100
    finally:
        eng.close()


def test_think_budget_forces_end_text() -> None:
    script = ["<think>", "a", "b", "c", "d", "</think>", "answer"]
    eng = FakeEngine(script)
    try:
        req = GenerationRequest(prompt=[1], think_budget=ThinkBudget(max_tokens=3))
        events = list(eng.submit(req))
        assert [e.text for e in events] == ["<think>", "a", "b", "</think>", "answer"]
        assert [e.forced for e in events] == [False, False, False, True, False]
        # Within budget: nothing is forced.
        events = list(eng.submit(GenerationRequest(prompt=[1], think_budget=ThinkBudget(max_tokens=10))))
        assert [e.text for e in events] == script and not any(e.forced for e in events)
    finally:
        eng.close()


def test_logprobs_and_prefix_cache(engine: FakeEngine) -> None:
    prompt = list(range(10, 40))
    first = engine.submit(GenerationRequest(prompt=prompt))
    list(first)
    assert first.cached_tokens == 0
    sampling = SamplingParams(logprobs=True, top_logprobs=2)
    second = engine.submit(GenerationRequest(prompt=[*prompt[:20], 99], sampling=sampling))
    events = list(second)
    assert second.cached_tokens == 20
    assert events[0].logprob == 0.0 and events[0].top_logprobs == [("Hello", 0.0)]
    stats = engine.stats()
    assert stats.prefix_cache_hits == 1 and stats.prefix_cache_tokens == 20 and stats.prompt_tokens == 51


def test_embed_is_deterministic(engine: FakeEngine) -> None:
    a, b, c = engine.embed(["hello", "hello", "other text"])
    assert a == b and a != c and len(a) == 32
    assert abs(sum(v * v for v in a) - 1.0) < 1e-9


def test_the_test_double_lives_outside_the_engine_package() -> None:
    import kaiyuan.engine
    import kaiyuan.testing

    assert "FakeEngine" not in kaiyuan.engine.__all__ and not hasattr(kaiyuan.engine, "FakeEngine")
    assert kaiyuan.testing.__all__ == ["FakeEngine"]
