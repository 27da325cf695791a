"""PEFT LoRA weights -> a GGUF LoRA adapter file that llama.cpp loads (``llama_adapter_lora_init``).

Owns what llama.cpp's loader checks and expects, the same things its ``convert_lora_to_gguf.py`` writes:

- metadata ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` and the base's
  ``general.architecture`` (the loader refuses an architecture mismatch);
- tensor names: the base tensor's GGUF name plus ``.lora_a`` / ``.lora_b`` (``blk.3.attn_q.weight.lora_a``),
  mapped from Hugging Face module names with gguf-py's own ``TensorNameMap``;
- shapes: ``lora_a`` is PEFT's A (rank x in), ``lora_b`` is PEFT's B (out x rank); GGUF stores dims reversed, so the
  loader sees a.ne = [in, rank], b.ne = [rank, out] as it validates;
- the Q/K row permutation: llama-family GGUFs store ``attn_q``/``attn_k`` rows in the interleaved RoPE order that
  llama.cpp's converter produces (``LlamaModel.permute``), while transformers works on the de-interleaved HF order.
  A LoRA delta ``B @ A`` lives in output-row space, so only B's rows are permuted, exactly like the base weight.
- scale: llama.cpp applies ``alpha / rank``; PEFT applies ``alpha / rank`` (or ``alpha / sqrt(rank)`` with rsLoRA,
  which is folded into the written alpha).

Works on numpy arrays; knows nothing of torch, training, the store or licenses (the caller passes metadata).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaiyuan.errors import ExportError, MissingExtra

__all__ = [
    "PERMUTED_QK_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "BaseShape",
    "PeftAdapter",
    "gguf_lora_tensors",
    "permute_qk_rows",
    "read_peft_adapter",
    "write_lora_gguf",
]

# GGUF architectures whose attn_q / attn_k rows are stored RoPE-interleaved (llama.cpp's LlamaModel.permute).
PERMUTED_QK_ARCHITECTURES = frozenset({"llama"})
# Dense architectures whose HF module names map one-to-one onto GGUF tensors (no fused or split projections).
SUPPORTED_ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3"})


@dataclass(frozen=True)
class BaseShape:
    """What the converter needs to know of the base model."""

    architecture: str  # GGUF general.architecture, e.g. "llama"
    block_count: int  # transformer layers
    head_count: int  # attention heads (query)
    head_count_kv: int  # key/value heads (GQA); equals head_count without GQA

    @classmethod
    def from_gguf(cls, path: Path) -> BaseShape:
        """Read the shape from a base model's GGUF metadata (no tensor data is read)."""
        import gguf

        try:
            reader = gguf.GGUFReader(str(path), "r")
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read GGUF {path}: {exc}") from exc
        arch = _field(reader, "general.architecture")
        if not isinstance(arch, str):
            raise ExportError(f"{path} has no general.architecture; is it a model GGUF?")
        blocks = _field(reader, f"{arch}.block_count")
        heads = _field(reader, f"{arch}.attention.head_count")
        heads_kv = _field(reader, f"{arch}.attention.head_count_kv", default=heads)
        if not all(isinstance(v, int) for v in (blocks, heads, heads_kv)):
            raise ExportError(f"{path}: per-layer head counts are not supported for LoRA export")
        return cls(
            architecture=arch, block_count=int(blocks), head_count=int(heads), head_count_kv=int(heads_kv)
        )


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    if isinstance(value, float | int | str):
        return value
    return default


@dataclass
class PeftAdapter:
    """A PEFT LoRA adapter in memory: A/B matrices by HF module name, and the scaling it was trained with."""

    tensors: dict[str, np.ndarray]  # PEFT state-dict names -> arrays (float32)
    alpha: float  # lora_alpha
    rank: int  # r
    use_rslora: bool = False  # PEFT scaling alpha/sqrt(r) instead of alpha/r

    @property
    def gguf_alpha(self) -> float:
        """The alpha that makes llama.cpp's ``alpha / rank`` equal PEFT's scaling."""
        if self.use_rslora:
            return self.alpha * math.sqrt(self.rank)
        return self.alpha


def read_peft_adapter(folder: Path) -> PeftAdapter:
    """Load ``adapter_config.json`` + ``adapter_model.safetensors`` as written by PEFT's ``save_pretrained``."""
    config_path = folder / "adapter_config.json"
    weights_path = folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(
            f"{folder} is not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"
        )
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingExtra("tune", feature="reading a PEFT adapter") from exc
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(
            f"{folder}: only LoRA adapters can be exported, this one is {config.get('peft_type')}"
        )
    for unsupported in ("use_dora", "rank_pattern", "alpha_pattern"):
        if config.get(unsupported):
            raise ExportError(f"{folder}: '{unsupported}' adapters cannot be expressed as a llama.cpp LoRA")
    tensors = {
        name: np.asarray(array, dtype=np.float32) for name, array in load_file(str(weights_path)).items()
    }
    return PeftAdapter(
        tensors=tensors,
        alpha=float(config["lora_alpha"]),
        rank=int(config["r"]),
        use_rslora=bool(config.get("use_rslora", False)),
    )


def permute_qk_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF (half-split RoPE) row order -> GGUF (interleaved) row order, per head; llama.cpp's ``permute``."""
    out = rows.shape[0]
    if out % (2 * n_head):
        raise ExportError(f"cannot permute {out} rows over {n_head} heads")
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _module_name(peft_name: str) -> tuple[str, str] | None:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> ('model.layers.0.self_attn.q_proj', 'A')."""
    name = peft_name.removeprefix("base_model.model.")
    for part in ("A", "B"):
        suffix = f".lora_{part}.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    return None


def gguf_lora_tensors(adapter: PeftAdapter, base: BaseShape) -> list[tuple[str, np.ndarray]]:
    """The (GGUF name, array) pairs of the adapter file, in a stable order."""
    import gguf

    if base.architecture not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"LoRA export supports {', '.join(sorted(SUPPORTED_ARCHITECTURES))} models, not {base.architecture!r}"
        )
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == base.architecture)
    name_map = gguf.get_tensor_name_map(arch_enum, base.block_count)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for peft_name, array in adapter.tensors.items():
        parsed = _module_name(peft_name)
        if parsed is None:
            raise ExportError(
                f"adapter tensor {peft_name!r} is not a LoRA A/B matrix (trained embeddings or norms cannot be "
                "exported as a llama.cpp LoRA; train with LoRA on linear layers only)"
            )
        module, part = parsed
        pairs.setdefault(module, {})[part] = array
    result: list[tuple[str, np.ndarray]] = []
    for module in sorted(pairs, key=_natural_key):
        ab = pairs[module]
        if set(ab) != {"A", "B"}:
            raise ExportError(f"adapter module {module} lacks its lora_A or lora_B matrix")
        gguf_name = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None or module.endswith(("embed_tokens", "lm_head")):
            raise ExportError(
                f"adapter module {module} has no llama.cpp LoRA equivalent for {base.architecture}"
            )
        lora_a, lora_b = ab["A"], ab["B"]
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
            raise ExportError(f"adapter module {module}: A {lora_a.shape} and B {lora_b.shape} do not chain")
        if base.architecture in PERMUTED_QK_ARCHITECTURES:
            if gguf_name.endswith(".attn_q.weight"):
                lora_b = permute_qk_rows(lora_b, base.head_count)
            elif gguf_name.endswith(".attn_k.weight"):
                lora_b = permute_qk_rows(lora_b, base.head_count_kv)
        result.append((gguf_name + ".lora_a", np.ascontiguousarray(lora_a, dtype=np.float32)))
        result.append((gguf_name + ".lora_b", np.ascontiguousarray(lora_b, dtype=np.float32)))
    if not result:
        raise ExportError("the adapter holds no LoRA matrices")
    return result


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def write_lora_gguf(
    adapter: PeftAdapter,
    base: BaseShape,
    dest: Path,
    *,
    metadata: Mapping[str, str | int | float] | None = None,
    half: bool = False,
) -> int:
    """Write the adapter as a GGUF LoRA file at ``dest`` (the caller makes it atomic); returns tensors written.

    ``metadata`` adds ``general.*`` string/int/float keys (name, license, base_model lineage). ``half`` stores
    the matrices as F16 (half the size; llama.cpp accepts both).
    """
    import gguf

    tensors = gguf_lora_tensors(adapter, base)
    writer = gguf.GGUFWriter(str(dest), base.architecture)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter.gguf_alpha))
        for key, value in (metadata or {}).items():
            _add_scalar(writer, key, value)
        for name, array in tensors:
            writer.add_tensor(name, array.astype(np.float16) if half else array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return len(tensors)


def _add_scalar(writer: Any, key: str, value: str | int | float) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if value >= 0 else writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_string(key, str(value))
