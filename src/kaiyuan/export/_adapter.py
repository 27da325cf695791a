"""Converting a trained PEFT adapter folder into a GGUF LoRA file next to it (atomically).

Owns finding the base model's shape (from its GGUF metadata, or from an HF ``config.json`` for HF-layout bases)
and naming the GGUF architecture. The tensor conventions themselves live in ``_lora_gguf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kaiyuan.errors import ExportError
from kaiyuan.export._atomic import atomic_output
from kaiyuan.export._lora_gguf import BaseShape, read_peft_adapter, write_lora_gguf

__all__ = ["base_shape_of", "convert_peft_adapter"]

# transformers model_type -> GGUF general.architecture, for HF-layout bases
_HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


def base_shape_of(base_path: Path, hf_config: Mapping[str, Any] | None = None) -> BaseShape:
    """The base's shape from its GGUF file, or from ``hf_config`` (a transformers config dict) for folders."""
    if base_path.is_file():
        return BaseShape.from_gguf(base_path)
    if hf_config is None:
        raise ExportError(f"{base_path} is not a GGUF file and no model config was given")
    model_type = str(hf_config.get("model_type", ""))
    arch = _HF_TO_GGUF_ARCH.get(model_type)
    if arch is None:
        raise ExportError(f"LoRA export does not support {model_type!r} models")
    heads = int(hf_config["num_attention_heads"])
    return BaseShape(
        architecture=arch,
        block_count=int(hf_config["num_hidden_layers"]),
        head_count=heads,
        head_count_kv=int(hf_config.get("num_key_value_heads") or heads),
    )


def convert_peft_adapter(
    peft_dir: Path,
    base_path: Path,
    dest: Path,
    *,
    metadata: Mapping[str, str | int | float] | None = None,
    architecture: str | None = None,
    hf_config: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """PEFT adapter folder -> GGUF LoRA at ``dest``; never leaves a partial file. Returns ``dest``."""
    adapter = read_peft_adapter(Path(peft_dir))
    shape = base_shape_of(Path(base_path), hf_config)
    if (
        architecture
        and base_path.is_file()
        and _HF_TO_GGUF_ARCH.get(architecture, architecture) != shape.architecture
    ):
        raise ExportError(
            f"adapter was trained on a {architecture} model but the base GGUF is {shape.architecture}"
        )
    with atomic_output(Path(dest)) as tmp:
        write_lora_gguf(adapter, shape, tmp, metadata=metadata, half=half)
    return Path(dest)
