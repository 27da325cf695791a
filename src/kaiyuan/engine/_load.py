"""``load_engine``: the one call the server and CLI use to turn a GGUF path into a running ``Engine``.

Imports the llama.cpp backend only when called, so ``import kaiyuan.engine`` stays light. Every failure comes out
as a ``KaiyuanError`` with a one-line message (``InvalidModelFile`` for a bad file, ``EngineError`` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

from kaiyuan.engine._protocol import Engine
from kaiyuan.errors import EngineError, KaiyuanError

__all__ = ["load_engine"]


def load_engine(
    model_path: str,
    *,
    adapters: Sequence[str] = (),
    n_ctx: int = 4096,
    n_parallel: int = 4,
    n_threads: int | None = None,
    flash_attn: str = "off",
    max_queue: int = 64,
    n_batch: int = 512,
    embedding: bool = False,
    kv_unified: bool = False,
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
        )
    except KaiyuanError:
        raise
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(f"could not load {model_path}: {first_line}") from exc
