"""The scheduler's batches: what it hands llama.cpp each step (read at the ``llama_decode`` call)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_cpp import llama_cpp as lib
from tests.engine.conftest import THREADS

from kaiyuan.engine import GenerationRequest
from kaiyuan.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
# No two share a first token: each stays cached in the slot it first ran in.
OPENINGS = ["Parcels travel by", "Ferries leave the", "Harbours are full of", "Lighthouses stand on"]


def test_generating_sequences_are_batched_in_sequence_id_order(
    model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With per-sequence KV buffers llama.cpp decodes each run of consecutive, increasing sequence ids as its own
    micro-batch (a whole graph computation), so a step's tokens must go in sequence-id order, whatever order the
    requests arrived in. Here they arrive in reverse slot order (each finds its prompt cached in its old slot)."""
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=4, n_threads=THREADS) as eng:
        prompts = [eng.tokenize(text) for text in OPENINGS]
        for tokens in prompts:  # one at a time: they take slots 0, 1, 2, 3 and stay cached there
            list(eng.submit(GenerationRequest(prompt=tokens, sampling=GREEDY, max_tokens=2)))

        batches: list[list[int]] = []
        decode = lib.llama_decode

        def recording_decode(ctx: Any, batch: Any) -> int:
            batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
            return decode(ctx, batch)

        monkeypatch.setattr(lib, "llama_decode", recording_decode)
        handles = [
            eng.submit(GenerationRequest(prompt=tokens, sampling=GREEDY, max_tokens=12))
            for tokens in reversed(prompts)
        ]
        for handle in handles:
            list(handle)
        assert [h.cached_tokens for h in handles] == [
            len(t) - 1 for t in reversed(prompts)
        ]  # in their old slots

    all_four = [seqs for seqs in batches if sorted(seqs) == [0, 1, 2, 3]]
    assert all_four, batches  # the four generated side by side
    assert all(seqs == [0, 1, 2, 3] for seqs in all_four), all_four
