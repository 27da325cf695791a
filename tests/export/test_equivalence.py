"""Equivalence: the PEFT model in transformers and llama.cpp running our exported GGUF LoRA (or our merged GGUF)
give the same next-token logits over ~300 positions of text.

The reference is PEFT on SmolLM2 dequantized to F32. On an F32 base llama.cpp must match near exactly (top-1 ≥ 99.5%,
max |Δlogit| reported); on the Q4_1 base, where llama.cpp's quantized kernels already differ from the dequantized
weights, top-1 ≥ 95% and mean KL < 0.01. The LoRA matrices are random (B ≠ 0) so the adapter visibly changes the
model; a control shows that llama.cpp without the adapter, or with the Q/K permutation left out, does not match.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.export import convert_peft_adapter, merge_adapter, quantize, read_gguf_adapter
from tests.tune.models import (
    hf_model,
    llama_logits,
    logit_agreement,
    make_f32_copy,
    needs_tune,
    smollm2_path,
    text_tokens,
    torch_logits,
)

pytestmark = pytest.mark.slow
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs_tune()
    import torch
    from peft import LoraConfig, get_peft_model

    work = tmp_path_factory.mktemp("equivalence")
    f32 = make_f32_copy(work / "smollm2-f32.gguf")
    model = hf_model(f32)
    tokens = text_tokens()
    base_logits = torch_logits(model, tokens)
    with warnings.catch_warnings():  # PEFT and transformers warn about each other's deprecations
        warnings.simplefilter("ignore")
        # seeded before PEFT draws lora_A: the adapter (and so every agreement figure) is the same on every run
        torch.manual_seed(0)
        peft_model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0)
        )
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.02)
        peft_model.save_pretrained(str(work / "peft"))
    adapter = convert_peft_adapter(work / "peft", f32, work / "adapter.gguf")
    return {
        "work": work,
        "f32": f32,
        "tokens": tokens,
        "base": base_logits,
        "peft": torch_logits(peft_model.eval(), tokens),
        "adapter": adapter,
    }


def _report(label: str, stats: dict[str, float]) -> None:
    print(f"\n{label}: " + json.dumps({k: round(v, 6) for k, v in stats.items()}))


def test_adapter_file_is_what_llama_cpp_expects(setup: dict[str, Any]) -> None:
    import gguf

    reader = gguf.GGUFReader(str(setup["adapter"]))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(16.0)
    assert reader.fields["general.architecture"].contents() == "llama"
    tensors = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert len(tensors) == 30 * 7 * 2
    # ne order: lora_a is [in, rank], lora_b is [rank, out]; attn_k's out is 3 kv heads x 64
    assert tensors["blk.0.attn_q.weight.lora_a"] == [576, 8]
    assert tensors["blk.0.attn_k.weight.lora_b"] == [8, 192]
    assert tensors["blk.29.ffn_down.weight.lora_a"] == [1536, 8]


def test_adapter_on_f32_base_matches_peft(setup: dict[str, Any]) -> None:
    adapted = llama_logits(setup["f32"], setup["tokens"], setup["adapter"])
    stats = logit_agreement(setup["peft"], adapted)
    _report("PEFT vs llama.cpp F32 + GGUF LoRA", stats)
    assert stats["positions"] >= 250
    assert stats["top1"] >= 0.995
    assert stats["max_abs"] < 0.5
    # control: the adapter matters, so a loader that ignored it could not pass
    unadapted = logit_agreement(setup["peft"], llama_logits(setup["f32"], setup["tokens"]))
    _report("control: PEFT vs llama.cpp F32 without adapter", unadapted)
    assert unadapted["top1"] < 0.99 and unadapted["max_abs"] > 0.5


def test_adapter_on_q4_1_base_matches_peft(setup: dict[str, Any]) -> None:
    adapted = llama_logits(smollm2_path(), setup["tokens"], setup["adapter"])
    stats = logit_agreement(setup["peft"], adapted)
    _report("PEFT vs llama.cpp Q4_1 + GGUF LoRA", stats)
    assert stats["top1"] >= 0.95
    assert stats["mean_kl"] < 0.01


def test_qk_permutation_is_needed(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import kaiyuan.export._lora_gguf as lora_gguf

    monkeypatch.setattr(lora_gguf, "PERMUTED_QK_ARCHITECTURES", frozenset())
    wrong = convert_peft_adapter(setup["work"] / "peft", setup["f32"], setup["work"] / "unpermuted.gguf")
    stats = logit_agreement(setup["peft"], llama_logits(setup["f32"], setup["tokens"], wrong))
    _report("control: adapter exported without the Q/K permutation", stats)
    assert stats["max_abs"] > 0.5 and stats["top1"] < 0.995


def test_merged_f32_matches_peft(setup: dict[str, Any]) -> None:
    merged = setup["work"] / "merged-f32.gguf"
    count = merge_adapter(setup["f32"], read_gguf_adapter(setup["adapter"]), merged, metadata={}, half=False)
    assert count == 30 * 7
    stats = logit_agreement(setup["peft"], llama_logits(merged, setup["tokens"]))
    _report("PEFT vs merged F32 GGUF", stats)
    assert stats["top1"] >= 0.995
    assert stats["max_abs"] < 0.5


def _merged_from_q4_1(setup: dict[str, Any]) -> Path:
    merged = setup["work"] / "merged-from-q4_1-f16.gguf"
    if not merged.exists():
        merge_adapter(smollm2_path(), read_gguf_adapter(setup["adapter"]), merged, metadata={}, half=True)
    return merged


def test_merged_from_q4_1_base_f16_matches_peft(setup: dict[str, Any]) -> None:
    """Merged into the Q4_1 base and kept at F16: the dequantized base plus the update, near exact."""
    stats = logit_agreement(setup["peft"], llama_logits(_merged_from_q4_1(setup), setup["tokens"]))
    _report("PEFT vs merged (Q4_1 base) GGUF at F16", stats)
    assert stats["top1"] >= 0.995
    assert stats["mean_kl"] < 0.001


def test_merged_from_q4_1_base_q8_0_matches_peft(setup: dict[str, Any]) -> None:
    """Quantized to Q8_0 (the --merge default for a 4-bit base): a second, 8-bit rounding on top of the Q4_1 base's
    own error, held to the issue's Q4_1 bounds all the same (measured 97.0% top-1, KL 0.004)."""
    quantize(_merged_from_q4_1(setup), setup["work"] / "merged-q8_0.gguf", "Q8_0", threads=1)
    stats = logit_agreement(setup["peft"], llama_logits(setup["work"] / "merged-q8_0.gguf", setup["tokens"]))
    _report("PEFT vs merged (Q4_1 base) GGUF quantized to Q8_0", stats)
    assert stats["top1"] >= 0.95
    assert stats["mean_kl"] < 0.01


def test_merged_requantized_to_q4_1_pays_a_second_quantization(setup: dict[str, Any]) -> None:
    """Re-quantizing the merged weights to Q4_1 adds a second round of 4-bit error on every adapted tensor; it is
    measured and bounded here, and is why --merge defaults to Q8_0 for a 4-bit base (docs/fine-tuning.md)."""
    quantize(_merged_from_q4_1(setup), setup["work"] / "merged-q4_1.gguf", "Q4_1", threads=1)
    stats = logit_agreement(setup["peft"], llama_logits(setup["work"] / "merged-q4_1.gguf", setup["tokens"]))
    _report("PEFT vs merged GGUF re-quantized to Q4_1", stats)
    assert stats["top1"] >= 0.90
    assert stats["mean_kl"] < 0.03
