"""Conversion between model formats: GGUF ↔ Hugging Face folders (safetensors, config, tokenizer).

Sits beside ``export``: may import the leaf layer, ``store``, ``license`` and ``export`` (for quantizing);
torch and transformers are imported lazily, only when a conversion runs (they come with ``kaiyuan[tune]``).
See ``docs/convert.md``.
"""

from kaiyuan.convert._convert import FORMATS, RELATION, convert_model, default_name
from kaiyuan.convert._gguf_to_hf import HF_DTYPES, gguf_to_hf
from kaiyuan.convert._hf_to_gguf import GGUF_OUTTYPES, HF_ARCHITECTURES, hf_architecture, hf_to_gguf

__all__ = [
    "FORMATS",
    "GGUF_OUTTYPES",
    "HF_ARCHITECTURES",
    "HF_DTYPES",
    "RELATION",
    "convert_model",
    "default_name",
    "gguf_to_hf",
    "hf_architecture",
    "hf_to_gguf",
]
