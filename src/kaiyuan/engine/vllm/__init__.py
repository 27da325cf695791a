"""The vLLM engine: Hugging Face-format model folders on vLLM's async engine (CPU build or CUDA).

Importing this package imports vLLM; ``kaiyuan.engine.load_engine(..., engine="vllm")`` does it only when asked.
"""

from kaiyuan.engine.vllm._engine import VllmEngine, VllmOptions

__all__ = ["VllmEngine", "VllmOptions"]
