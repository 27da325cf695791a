"""A GGUF LoRA adapter -> a PEFT LoRA folder (``adapter_config.json`` + ``adapter_model.safetensors``).

The inverse of ``_lora_gguf.py``: what lets an adapter model kept in the store as a GGUF LoRA (made by
``kaiyuan tune`` or imported) run on the vLLM engine, which loads PEFT folders. Owns the GGUF -> Hugging Face
module names of the dense architectures the exporter supports, the Q/K row order (llama GGUFs keep ``attn_q`` /
``attn_k`` rows RoPE-interleaved; B's rows go back to the HF order) and the scale (llama.cpp's ``alpha / rank`` is
PEFT's ``lora_alpha / r``). numpy, gguf-py and safetensors only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from kaiyuan.errors import ExportError, MissingExtra
from kaiyuan.export._atomic import temporary_sibling
from kaiyuan.export._lora_gguf import PERMUTED_QK_ARCHITECTURES, SUPPORTED_ARCHITECTURES, BaseShape
from kaiyuan.export._merge import read_gguf_adapter

__all__ = ["gguf_lora_to_peft"]

# GGUF tensor stem -> Hugging Face module of one decoder layer (llama, qwen2, qwen3 name them alike)
_HF_MODULES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def _unpermute_qk_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF (interleaved) row order -> HF (half-split RoPE) row order, per head: undoes ``permute_qk_rows``."""
    out = rows.shape[0]
    if out % (2 * n_head):
        raise ExportError(f"cannot un-permute {out} rows over {n_head} heads")
    return rows.reshape(n_head, out // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def gguf_lora_to_peft(adapter_path: Path, base: BaseShape, dest: Path, *, base_name: str = "") -> Path:
    """Write the GGUF LoRA at ``adapter_path`` (made for a model of shape ``base``) as a PEFT folder ``dest``
    (atomically). ``base_name`` goes into ``base_model_name_or_path``. Returns ``dest``."""
    try:
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise MissingExtra("tune", feature="writing a PEFT adapter") from exc
    weights = read_gguf_adapter(adapter_path)
    if weights.architecture != base.architecture:
        raise ExportError(
            f"{adapter_path.name} is a LoRA for {weights.architecture!r} models, not for this "
            f"{base.architecture!r} base"
        )
    if base.architecture not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"LoRA conversion supports {', '.join(sorted(SUPPORTED_ARCHITECTURES))} models, not {base.architecture!r}"
        )
    tensors: dict[str, np.ndarray] = {}
    modules: set[str] = set()
    rank = 0
    for name, ab in weights.pairs.items():
        match = _LAYER_TENSOR.match(name)
        if match is None or match.group(2) not in _HF_MODULES:
            raise ExportError(f"adapter tensor {name!r} has no Hugging Face module this converter knows")
        layer, stem = int(match.group(1)), match.group(2)
        if layer >= base.block_count:
            raise ExportError(f"adapter tensor {name!r} is beyond the base's {base.block_count} layers")
        lora_a, lora_b = ab["a"], ab["b"]  # (rank, in), (out, rank)
        if base.architecture in PERMUTED_QK_ARCHITECTURES and stem in ("attn_q", "attn_k"):
            heads = base.head_count if stem == "attn_q" else base.head_count_kv
            lora_b = _unpermute_qk_rows(lora_b, heads)
        module = _HF_MODULES[stem]
        modules.add(module.split(".")[-1])
        prefix = f"base_model.model.model.layers.{layer}.{module}"
        tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(lora_a, dtype=np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(lora_b, dtype=np.float32)
        rank = max(rank, int(lora_a.shape[0]))
    if not tensors:
        raise ExportError(f"{adapter_path.name} holds no LoRA matrices")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": rank,
        "lora_alpha": weights.alpha or float(rank),  # llama.cpp reads alpha 0 as scale 1
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "target_modules": sorted(modules),
    }
    tmp = temporary_sibling(dest)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, dest)
    except BaseException:  # Ctrl-C included: never a half-written folder under dest's name
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
