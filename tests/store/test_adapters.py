"""Adapter models: a base model plus a LoRA adapter GGUF, stored as one more blob."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from kaiyuan.errors import InvalidModelFile
from kaiyuan.store import ModelStore
from tests.fixtures import tiny_gguf

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module
Factory = Callable[..., Path]


def make_lora_gguf(path: Path, arch: str = "llama", rank: int = 4) -> Path:
    """A LoRA adapter file the way convert_lora_to_gguf.py lays it out (general.type = adapter)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    rng = np.random.default_rng(0)
    for layer in range(2):
        writer.add_tensor(
            f"blk.{layer}.attn_q.weight.lora_a", rng.standard_normal((rank, 64), dtype=np.float32)
        )
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", np.zeros((64, rank), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_adapter_model_stacks_on_its_base(
    kaiyuan_home: Path, tiny_gguf_factory: Factory, tmp_path: Path
) -> None:
    store = ModelStore(kaiyuan_home)
    base = store.import_gguf(tiny_gguf_factory(), "base")
    adapter_file = make_lora_gguf(tmp_path / "lora.gguf")
    lineage = {"base_models": [{"name": "base:latest"}], "datasets": ["my-data.jsonl"]}
    license = {"inherited": True, "source": "inherited"}
    tuned = store.add_adapter_model("tuned", "base", adapter_file, lineage=lineage, license=license)
    assert tuned.base == "base:latest"
    assert tuned.model_path == base.model_path
    assert len(tuned.adapter_paths) == 1 and tuned.adapter_paths[0].read_bytes() == adapter_file.read_bytes()
    assert tuned.lineage["relation"] == "adapter" and tuned.lineage["datasets"] == ["my-data.jsonl"]
    assert tuned.license == license
    assert tuned.size == base.size + adapter_file.stat().st_size
    assert tuned.to_model_info().adapters == [str(tuned.adapter_paths[0])]

    store.remove("base")
    kept = store.resolve("tuned")
    assert kept.model_path.is_file(), "the base blob stays while the adapter model uses it"
    store.remove("tuned")
    assert not base.model_path.exists() and not tuned.adapter_paths[0].exists()


def test_adapter_must_match_the_base(kaiyuan_home: Path, tiny_gguf_factory: Factory, tmp_path: Path) -> None:
    store = ModelStore(kaiyuan_home)
    store.import_gguf(tiny_gguf_factory(), "base")
    with pytest.raises(InvalidModelFile, match="architecture 'qwen3'"):
        store.add_adapter_model(
            "x", "base", make_lora_gguf(tmp_path / "q.gguf", arch="qwen3"), lineage={}, license={}
        )
    with pytest.raises(InvalidModelFile, match=r"general\.type is 'model', expected 'adapter'"):
        store.add_adapter_model("x", "base", tiny_gguf_factory(), lineage={}, license={})
    assert not store.exists("x")
