"""The llama.cpp backend: continuous batching over sequence slots, prefix cache, per-request LoRA, embeddings.

Importing this package imports llama-cpp-python (and loads its shared library).
"""

from kaiyuan.engine.llama_cpp._engine import LlamaCppEngine

__all__ = ["LlamaCppEngine"]
