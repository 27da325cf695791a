"""Per-request LoRA adapters: base and adapter requests run side by side, each with its own behaviour."""

from __future__ import annotations

import pytest
from tests.engine.conftest import THREADS

from kaiyuan.engine import GenerationRequest
from kaiyuan.errors import InvalidModelFile
from kaiyuan.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = ["Once upon a time", "The three primary colors are"]


def run(eng, text: str, adapter: str | None, *, bare: bool = False) -> list[int]:
    """Greedy tokens for ``text`` with ``adapter``; with none, the engine's defaults (or no adapter: ``bare``)."""
    adapters = () if bare else None if adapter is None else (adapter,)
    handle = eng.submit(
        GenerationRequest(prompt=eng.tokenize(text), sampling=GREEDY, max_tokens=10, adapters=adapters)
    )
    return [e.token for e in handle]


def test_adapter_requests_alone_and_mixed(model_path: str, lora_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=4, n_threads=THREADS) as eng:
        base = [run(eng, p, None) for p in PROMPTS]
        tuned = [run(eng, p, lora_path) for p in PROMPTS]
        assert any(b[:4] != t[:4] for b, t in zip(base, tuned, strict=True))  # the adapter changes the output
        # Same prompt again with the adapter: the base model's cached KV must not be reused.
        again = eng.submit(
            GenerationRequest(
                prompt=eng.tokenize(PROMPTS[0]), sampling=GREEDY, max_tokens=1, adapters=(lora_path,)
            )
        )
        list(again)
        handles = [
            eng.submit(
                GenerationRequest(
                    prompt=eng.tokenize(p),
                    sampling=GREEDY,
                    max_tokens=10,
                    adapters=None if a is None else (a,),
                )
            )
            for p in PROMPTS
            for a in (None, lora_path)
        ]
        mixed = [[e.token for e in h] for h in handles]
    # Base sequences only ever share a batch with base sequences: bit-exact (quantized dot products are
    # integer sums). The adapter's F32 matmuls round differently with other batch sizes, so compare a few tokens.
    assert mixed[0] == base[0] and mixed[2] == base[1]
    assert mixed[1][:4] == tuned[0][:4] and mixed[3][:4] == tuned[1][:4]


def test_adapter_prefix_cache_is_per_adapter(model_path: str, lora_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS) as eng:
        prompt = eng.tokenize(PROMPTS[0])
        list(eng.submit(GenerationRequest(prompt=prompt, max_tokens=2)))
        tuned = eng.submit(
            GenerationRequest(prompt=prompt, max_tokens=2, adapters=(lora_path,))
        )  # loaded on first use
        list(tuned)
        assert tuned.cached_tokens == 0
        tuned_again = eng.submit(GenerationRequest(prompt=prompt, max_tokens=2, adapters=(lora_path,)))
        list(tuned_again)
        assert tuned_again.cached_tokens == len(prompt) - 1


def test_missing_or_bad_adapter(model_path: str, tmp_path) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    bad = tmp_path / "bad-lora.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 32)
    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=64, n_parallel=1, n_threads=THREADS) as eng:
        with pytest.raises(InvalidModelFile, match="not found"):
            eng.submit(GenerationRequest(prompt=[1], adapters=(str(tmp_path / "missing.gguf"),)))
        with pytest.raises(InvalidModelFile):
            eng.submit(GenerationRequest(prompt=[1], adapters=(str(bad),)))
        assert eng.stats().running == 0


def test_engine_adapters_apply_by_default(model_path: str, lora_path: str) -> None:
    """An adapter model served as base + LoRA: requests that name no adapter get the engine's adapters."""
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(
        model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS
    ) as base_engine:
        tuned = run(base_engine, PROMPTS[0], lora_path)
        base = run(base_engine, PROMPTS[0], None)
    with LlamaCppEngine(
        model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=THREADS, adapters=[lora_path]
    ) as eng:
        assert run(eng, PROMPTS[0], None) == tuned  # both fresh: the same batch shapes, bit-exact
        # Now a prefix-cache hit: the LoRA's F32 matmuls see other batch shapes; compare a few tokens.
        assert run(eng, PROMPTS[0], lora_path)[:4] == tuned[:4]
        assert run(eng, PROMPTS[0], None, bare=True)[:4] == base[:4]  # () turns the defaults off
    assert tuned != base
