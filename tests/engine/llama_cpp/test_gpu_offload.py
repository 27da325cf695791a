"""``--gpu-layers``: all layers by default where llama.cpp has a GPU backend, 0 on a CPU-only build; asking for
GPU layers on a CPU-only build is a clear error, not a silent CPU run."""

from __future__ import annotations

import pytest

from kaiyuan.engine.llama_cpp._model import ALL_LAYERS, default_gpu_layers, gpu_offload_supported
from kaiyuan.errors import ConfigError


def test_default_follows_the_build() -> None:
    assert default_gpu_layers() == (ALL_LAYERS if gpu_offload_supported() else 0)


@pytest.mark.skipif(gpu_offload_supported(), reason="this llama.cpp build has a GPU backend")
def test_gpu_layers_on_a_cpu_build_is_refused(model_path: str) -> None:
    from kaiyuan.engine.llama_cpp import LlamaCppEngine

    with pytest.raises(ConfigError, match="no GPU backend"):
        LlamaCppEngine(model_path, flash_attn="off", n_ctx=64, n_parallel=1, n_threads=1, gpu_layers=4)
    engine = LlamaCppEngine(model_path, flash_attn="off", n_ctx=64, n_parallel=1, n_threads=1)
    try:
        assert engine.gpu_layers == 0 and "CPU" in engine.description
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_offload_supported(), reason="needs llama.cpp built with a GPU backend")
def test_gpu_layers_are_honoured(model_path: str) -> None:
    from kaiyuan.engine import GenerationRequest
    from kaiyuan.engine.llama_cpp import LlamaCppEngine
    from kaiyuan.types import SamplingParams

    engine = LlamaCppEngine(model_path, flash_attn="off", n_ctx=256, n_parallel=1, n_threads=1)
    try:
        assert engine.gpu_layers == ALL_LAYERS and "GPU" in engine.description
        prompt = engine.tokenize("The capital of France is")
        text = "".join(
            e.text
            for e in engine.submit(
                GenerationRequest(prompt=prompt, sampling=SamplingParams(temperature=0, max_tokens=8))
            )
        )
        assert text.strip()
    finally:
        engine.close()
