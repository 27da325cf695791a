"""Merge a GGUF LoRA adapter into its base GGUF: ``W' = W + (alpha / rank) * B @ A`` per adapted tensor.

Works entirely in GGUF space (both files use llama.cpp's tensor names and Q/K row order), so it needs neither torch
nor the PEFT weights: any adapter llama.cpp can load can be merged. Owns copying the base's metadata (tokenizer,
chat template, hyper-parameters) into the merged file, replacing its identity with the new model's name, lineage
(``general.base_model.*``) and license, and streaming tensors one at a time (memory stays at one tensor).
The output is F32 or F16; ``_quantize`` turns it into the requested type. Knows nothing of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kaiyuan.errors import ExportError

__all__ = ["AdapterWeights", "add_metadata", "merge_adapter", "read_gguf_adapter"]

# Keys that describe the base itself, replaced by the merged model's identity (or written by the writer).
_REPLACED_PREFIXES = ("general.base_model.", "GGUF.")
_REPLACED_KEYS = frozenset({"general.architecture", "general.file_type", "general.name", "general.type"})


class AdapterWeights:
    """The A/B pairs and alpha of a GGUF LoRA adapter, read through gguf-py (memory-mapped)."""

    def __init__(self, path: Path) -> None:
        import gguf

        try:
            reader = gguf.GGUFReader(str(path), "r")
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read adapter {path}: {exc}") from exc
        fields = reader.fields

        def value(key: str) -> Any:
            field = fields.get(key)
            return field.contents() if field is not None else None

        if value("general.type") != "adapter" or value("adapter.type") != "lora":
            raise ExportError(f"{path} is not a GGUF LoRA adapter (general.type/adapter.type)")
        self.architecture = str(value("general.architecture"))
        self.alpha = float(value("adapter.lora.alpha") or 0.0)
        pairs: dict[str, dict[str, np.ndarray]] = {}
        for tensor in reader.tensors:
            for suffix, part in ((".lora_a", "a"), (".lora_b", "b")):
                if tensor.name.endswith(suffix):
                    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
                    pairs.setdefault(tensor.name[: -len(suffix)], {})[part] = np.asarray(
                        data, dtype=np.float32
                    )
        self.pairs = pairs
        for name, ab in pairs.items():
            if set(ab) != {"a", "b"}:
                raise ExportError(f"{path}: tensor {name} lacks its lora_a or lora_b")

    def delta(self, name: str) -> np.ndarray | None:
        """(out, in) update for base tensor ``name``, scaled as llama.cpp scales it; None if not adapted."""
        ab = self.pairs.get(name)
        if ab is None:
            return None
        a, b = ab["a"], ab["b"]  # a: (rank, in), b: (out, rank) in numpy order
        rank = b.shape[1]
        scale = self.alpha / rank if self.alpha else 1.0
        return (b @ a) * np.float32(scale)


def add_metadata(writer: Any, metadata: Mapping[str, str | int | float | bool]) -> None:
    """Write ``general.*``-style pairs to a gguf-py writer: bool, int (UINT32), float (FLOAT32), else string."""
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))


def read_gguf_adapter(path: Path) -> AdapterWeights:
    return AdapterWeights(path)


def merge_adapter(
    base_path: Path,
    adapter: AdapterWeights,
    dest: Path,
    *,
    metadata: Mapping[str, str | int | float],
    half: bool,
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> int:
    """Write base + adapter to ``dest`` (F32, or F16 for 2-D tensors when ``half``); returns tensors merged."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(base_path), "r")
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read base model {base_path}: {exc}") from exc
    arch_field = reader.fields.get("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else ""
    if arch != adapter.architecture:
        raise ExportError(f"adapter is for {adapter.architecture!r} but the base model is {arch!r}")
    names = {t.name for t in reader.tensors}
    unknown = sorted(set(adapter.pairs) - names)
    if unknown:
        raise ExportError(f"adapter tensors {unknown[:3]} have no counterpart in the base model")

    writer = gguf.GGUFWriter(str(dest), arch)
    for field in reader.fields.values():
        if field.name in _REPLACED_KEYS or field.name.startswith(_REPLACED_PREFIXES):
            continue
        main_type = field.types[0]
        sub_type = field.types[-1] if main_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), main_type, sub_type=sub_type)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)
    add_metadata(writer, metadata)

    def out_dtype(tensor: Any) -> type:
        return np.float16 if half and len(tensor.shape) >= 2 else np.float32

    for tensor in reader.tensors:
        shape = [int(n) for n in reversed(tensor.shape.tolist())]  # numpy order (rows, cols)
        dtype = np.dtype(out_dtype(tensor))
        writer.add_tensor_info(tensor.name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    merged = 0
    total = len(reader.tensors)
    try:
        for index, tensor in enumerate(reader.tensors):
            rows_cols = tuple(int(n) for n in reversed(tensor.shape.tolist()))
            weights = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
            weights = weights.reshape(rows_cols)
            delta = adapter.delta(tensor.name)
            if delta is not None:
                if delta.shape != weights.shape:
                    raise ExportError(
                        f"{tensor.name}: adapter update {delta.shape} does not fit {weights.shape}"
                    )
                weights = weights + delta
                merged += 1
            writer.write_tensor_data(np.ascontiguousarray(weights.astype(out_dtype(tensor))))
            if on_tensor is not None:
                on_tensor(index + 1, total, tensor.name)
    finally:
        writer.close()
    return merged
