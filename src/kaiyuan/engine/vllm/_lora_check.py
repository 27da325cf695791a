"""Is a PEFT LoRA folder made for this base model? Checked before vLLM loads it, from file headers only.

vLLM finds out that a LoRA belongs to another model only when it loads it, in the middle of a request. This reads
the safetensors header (JSON, no tensor data) and the base's ``config.json`` and refuses an adapter whose layers
or matrix sizes the base does not have, with a message that names the mismatch.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from kaiyuan.errors import InvalidRequest

__all__ = ["check_lora_fits"]

_LAYER = re.compile(r"\.layers\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with path.open("rb") as file:
        raw = file.read(8)
        if len(raw) != 8:
            raise ValueError("file too short")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise ValueError("header too large")
        header = json.loads(file.read(size))
    return {name: list(meta["shape"]) for name, meta in header.items() if name != "__metadata__"}


def check_lora_fits(adapter: Path, base: Path) -> None:
    """Raise ``InvalidRequest`` unless every LoRA matrix in ``adapter`` fits a layer and a width of ``base``."""
    weights = adapter / "adapter_model.safetensors"
    try:
        shapes = _safetensors_shapes(weights)
        config: dict[str, Any] = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"cannot read the LoRA adapter {adapter}: {exc}", param="adapters") from exc
    hidden = int(config.get("hidden_size", 0))
    heads = int(config.get("num_attention_heads", 0) or 1)
    head_dim = int(config.get("head_dim") or (hidden // heads if hidden else 0))
    kv = int(config.get("num_key_value_heads") or heads) * head_dim
    widths = {hidden, int(config.get("intermediate_size", 0)), heads * head_dim, kv} - {0}
    layers = int(config.get("num_hidden_layers", 0))
    for name, shape in shapes.items():
        match = _LAYER.search(name)
        if match and layers and int(match.group(1)) >= layers:
            raise InvalidRequest(
                f"LoRA {adapter.name} adapts layer {match.group(1)}, but the base model has {layers} layers: "
                "it was made for another model",
                param="adapters",
            )
        if len(shape) != 2:
            continue
        width = shape[1] if ".lora_A." in name else shape[0] if ".lora_B." in name else None
        if width is not None and widths and width not in widths:
            raise InvalidRequest(
                f"LoRA {adapter.name}: {name} has width {width}, which this base model (hidden size {hidden}) "
                "does not have: it was made for another model",
                param="adapters",
            )
