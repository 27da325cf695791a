"""Prefix cache: slot choice (pure bookkeeping) and KV reuse on the real model, also across slots."""

from __future__ import annotations

import pytest
from tests.engine.conftest import THREADS

from kaiyuan.engine import GenerationRequest
from kaiyuan.engine.llama_cpp._prefix_cache import PrefixCache, common_prefix
from kaiyuan.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
SYSTEM = (
    "<|im_start|>system\nYou are a careful assistant for a shipping company. Answer briefly, name the port, "
    "the vessel and the date when you know them, and say so plainly when you do not. Never invent tracking "
    "numbers. Prices are in euros. Office hours are nine to five, Monday to Friday.<|im_end|>\n"
)


def chat(question: str) -> str:
    return SYSTEM + f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix(list(range(1000)), list(range(1000))) == 1000
    assert common_prefix(list(range(1000)), [*range(700), -1]) == 700
    assert common_prefix([], [1]) == 0


def test_plan_prefers_cached_free_slot_and_lru() -> None:
    cache = PrefixCache(3)
    a = cache.plan([1, 2, 3, 4])
    assert a.reuse == 0 and a.copy_from is None
    cache.occupy(a)
    a.slot.tokens.extend([1, 2, 3, 4, 9])
    cache.release(a.slot)
    again = cache.plan([1, 2, 3, 4])
    assert again.slot is a.slot and again.reuse == 3  # the last prompt token is always evaluated
    other = cache.plan([7, 7])
    assert other.slot is not a.slot and other.reuse == 0  # an unrelated prompt keeps the cached slot alive
    assert cache.plan([1, 2, 3, 4], ("adapter.gguf",)).reuse == 0  # KV of another adapter is never reused


def test_a_fresh_request_goes_next_to_the_busy_slots() -> None:
    """Without a cached prefix to reuse, a request takes a free slot next to a busy one (per-sequence KV: each
    run of consecutive busy sequence ids is its own micro-batch), the least recently used of those."""
    cache = PrefixCache(4)
    for first in range(4):  # slots 0..3 used in turn, then free again; slot 0 is the least recently used
        plan = cache.plan([first + 10, 1, 2])
        assert plan.slot.seq == first
        cache.occupy(plan)
        plan.slot.tokens.extend([first + 10, 1, 2])
        cache.release(plan.slot)
    busy = cache.plan([12, 1, 2, 5])
    assert busy.slot.seq == 2 and busy.reuse == 3
    cache.occupy(busy)
    fresh = cache.plan([99, 98])
    assert fresh.slot.seq == 1  # beside slot 2 and used before slot 3 (slot 0 is older, but stands alone)
    cache.occupy(fresh)
    cache.occupy(cache.plan([98]))  # slot 0: it extends the run 1-2 as slot 3 would, and is the older
    assert cache.plan([97]).slot.seq == 3


def test_plan_copies_from_busy_slot() -> None:
    cache = PrefixCache(2, min_copy=4)
    first = cache.plan(list(range(50)))
    cache.occupy(first)
    first.slot.tokens.extend(range(50))
    plan = cache.plan([*range(40), 99])
    assert plan.copy_from is first.slot and plan.slot is not first.slot and plan.reuse == 40
    cache.occupy(plan)
    assert plan.slot.tokens == list(range(40))
    assert not cache.has_free()
    with pytest.raises(LookupError):
        cache.plan([1])
    small = PrefixCache(2, min_copy=4)
    busy = small.plan([1, 2, 3], None)
    small.occupy(busy)
    busy.slot.tokens.extend([1, 2, 3])
    assert small.plan([1, 2, 3, 5], None).copy_from is None  # 3 tokens are not worth a copy


def test_repeated_prompt_hits_the_cache(engine) -> None:
    prompt = engine.tokenize(chat("Where is my parcel?"))
    first = engine.submit(GenerationRequest(prompt=prompt, sampling=GREEDY, max_tokens=8))
    first_tokens = [e.token for e in first]
    before = engine.stats()
    second = engine.submit(GenerationRequest(prompt=prompt, sampling=GREEDY, max_tokens=8))
    assert [e.token for e in second] == first_tokens
    assert second.cached_tokens == len(prompt) - 1
    after = engine.stats()
    assert after.prefix_cache_hits == before.prefix_cache_hits + 1
    assert after.prefix_cache_tokens == before.prefix_cache_tokens + len(prompt) - 1


@pytest.mark.parametrize("kv_unified", [False, True], ids=["per-sequence-kv", "unified-kv"])
def test_prefix_is_copied_from_a_busy_slot(model_path: str, kv_unified: bool) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    question = chat("When does the office open?")
    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS) as fresh:
        expected = [
            e.token
            for e in fresh.submit(
                GenerationRequest(prompt=fresh.tokenize(question), sampling=GREEDY, max_tokens=8)
            )
        ]
    with LlamaCppEngine(
        model_path, flash_attn="off", n_ctx=256, n_parallel=2, n_threads=THREADS, kv_unified=kv_unified
    ) as eng:
        system = eng.tokenize(SYSTEM)
        busy = eng.submit(
            GenerationRequest(prompt=eng.tokenize(chat("Tell me a long story.")), max_tokens=200)
        )
        events = iter(busy)
        next(events)  # its prompt (with the system prompt) is in slot 0 now, and it keeps generating
        handle = eng.submit(GenerationRequest(prompt=eng.tokenize(question), sampling=GREEDY, max_tokens=8))
        got = [e.token for e in handle]
        assert eng.stats().running == 1  # the first request is still running in the other slot
        busy.cancel()
        list(events)
    assert handle.cached_tokens >= len(system)
    # The copied KV is exact with per-sequence buffers; with one unified pool, attention over other
    # sequences' (masked) cells may change float rounding, so only the first tokens are compared.
    assert got == expected if not kv_unified else got[:4] == expected[:4]
