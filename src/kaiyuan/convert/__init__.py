"""Conversion between model formats: GGUF ↔ Hugging Face folders (safetensors, config, tokenizer).

Sits beside ``export``: may import the leaf layer, ``store``, ``license`` and ``export`` (for quantizing);
torch and transformers are imported lazily, only when a conversion runs (they come with ``kaiyuan[tune]``).
See ``docs/convert.md``.
"""

from kaiyuan.convert._gguf_to_hf import HF_DTYPES, gguf_to_hf

__all__ = ["HF_DTYPES", "gguf_to_hf"]
