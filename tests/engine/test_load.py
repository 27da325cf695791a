"""The engine package surface: a sorted ``__all__``, a light import, and ``load_engine``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kaiyuan.engine
from kaiyuan.engine import Engine, GenerationRequest, load_engine
from kaiyuan.errors import ConfigError, InvalidModelFile
from kaiyuan.types import SamplingParams


def test_public_names_sorted() -> None:
    assert kaiyuan.engine.__all__ == sorted(kaiyuan.engine.__all__)
    for name in kaiyuan.engine.__all__:
        assert hasattr(kaiyuan.engine, name)


def test_import_does_not_load_llama_cpp() -> None:
    code = "import sys, kaiyuan.engine; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_load_engine_runs_the_model(model_path: str) -> None:
    engine = load_engine(model_path, flash_attn="off", n_ctx=128, n_parallel=1, n_threads=1)
    try:
        assert isinstance(engine, Engine) and engine.model_path == model_path
        handle = engine.submit(
            GenerationRequest(
                prompt=engine.tokenize("Hello"), sampling=SamplingParams(temperature=0), max_tokens=3
            )
        )
        assert len(list(handle)) == 3
    finally:
        engine.close()


def test_load_engine_errors(tmp_path) -> None:
    with pytest.raises(InvalidModelFile, match="not found"):
        load_engine(str(tmp_path / "missing.gguf"))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(InvalidModelFile) as info:
        load_engine(str(truncated), flash_attn="off", n_ctx=64, n_parallel=1, n_threads=1)
    assert "\n" not in info.value.message
    with pytest.raises(ConfigError):
        load_engine(str(truncated), flash_attn="sometimes")
