"""GGUF LoRA -> PEFT folder (for the vLLM engine): exact inverse of the PEFT -> GGUF export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kaiyuan.errors import ExportError
from kaiyuan.export import (
    BaseShape,
    gguf_lora_tensors,
    gguf_lora_to_peft,
    read_gguf_adapter,
    read_peft_adapter,
)
from tests.fixtures.tiny_gguf import smollm2_path

pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def gguf_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.lora_gguf import random_lora

    return Path(random_lora(smollm2_path(), tmp_path_factory.mktemp("lora") / "smollm2-lora.gguf"))


def test_round_trip_gives_back_the_same_tensors(gguf_lora: Path, tmp_path: Path) -> None:
    base = BaseShape.from_gguf(smollm2_path())
    folder = gguf_lora_to_peft(gguf_lora, base, tmp_path / "peft", base_name="smollm2:135m")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    peft = read_peft_adapter(folder)
    original = read_gguf_adapter(gguf_lora)
    assert peft.alpha == pytest.approx(original.alpha or peft.rank)
    back = dict(gguf_lora_tensors(peft, base))
    assert set(back) == {f"{name}.lora_{part}" for name in original.pairs for part in "ab"}
    for name, ab in original.pairs.items():
        np.testing.assert_array_equal(back[name + ".lora_a"], ab["a"])
        np.testing.assert_array_equal(back[name + ".lora_b"], ab["b"])  # Q/K rows permuted back and forth


def test_a_lora_for_another_architecture_is_refused(gguf_lora: Path, tmp_path: Path) -> None:
    other = BaseShape(architecture="qwen2", block_count=30, head_count=9, head_count_kv=3)
    with pytest.raises(ExportError, match="LoRA for 'llama' models"):
        gguf_lora_to_peft(gguf_lora, other, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()
