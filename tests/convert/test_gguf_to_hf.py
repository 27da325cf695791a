"""GGUF → Hugging Face folder (``kaiyuan.convert.gguf_to_hf``) on the bundled SmolLM2 (Q4_1): the folder is complete,
its tokenizer is llama.cpp's, and transformers on it decodes what llama.cpp decodes on the GGUF.

Measured (10 prompts × 16 greedy tokens, bf16 folder vs llama.cpp on the Q4_1 file, 1 thread): 9 of 10 first
tokens equal, 119 of 160 tokens inside the common prefixes. The dequantized weights are the Q4_1 values rounded to
bf16 and llama.cpp's Q4_1 kernels quantize activations to 8 bits, so near-ties may flip; a wrong conversion
(a missing Q/K un-permutation, a shifted vocabulary) agrees on almost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.errors import ExportError
from tests.convert.greedy import PROMPTS, common_prefix, hf_greedy, llama_greedy, llama_tokens
from tests.fixtures.tiny_gguf import smollm2_path

pytestmark = pytest.mark.slow

N_TOKENS = 16


def test_folder_has_weights_config_tokenizer_and_template(smollm2_hf_dir: Path) -> None:
    from kaiyuan.gguf import read_gguf

    names = {p.name for p in smollm2_hf_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    assert not [n for n in names if n.startswith(".")]
    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    tokenizer_config = json.loads((smollm2_hf_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == read_gguf(smollm2_path()).chat_template
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert 'license: "apache-2.0"' in (smollm2_hf_dir / "README.md").read_text()


def test_tokenizer_matches_llama_cpp(smollm2_hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_hf_dir))
    for text in (*PROMPTS, "naïve café — 東京 🚀 'll  spaces\n\ttabs"):
        assert tokenizer.encode(text, add_special_tokens=False) == llama_tokens(smollm2_path(), text), text
    messages = [{"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_tokens_match_llama_cpp_on_the_gguf(smollm2_hf_dir: Path) -> None:
    prompts = [llama_tokens(smollm2_path(), text) for text in PROMPTS]
    reference = llama_greedy(smollm2_path(), prompts, N_TOKENS)
    converted = hf_greedy(smollm2_hf_dir, prompts, N_TOKENS, dtype="bfloat16")
    prefixes = [common_prefix(a, b) for a, b in zip(reference, converted, strict=True)]
    print(f"\ncommon greedy prefixes (of {N_TOKENS}): {prefixes}")
    assert sum(p > 0 for p in prefixes) >= 8
    assert sum(prefixes) >= 0.6 * N_TOKENS * len(PROMPTS)


def test_bad_output_folder_or_dtype_is_refused_before_any_work(tmp_path: Path) -> None:
    from kaiyuan.convert import gguf_to_hf

    work = tmp_path / "work"
    taken = work / "taken"
    taken.mkdir(parents=True)
    (taken / "file").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        gguf_to_hf(smollm2_path(), taken)
    with pytest.raises(ExportError, match="unknown dtype"):
        gguf_to_hf(smollm2_path(), work / "out", dtype="int8")
    assert sorted(p.name for p in work.iterdir()) == ["taken"]


def test_architecture_transformers_cannot_read_is_named(
    tmp_path: Path, tiny_gguf_factory: Callable[..., Path]
) -> None:
    from kaiyuan.convert import gguf_to_hf

    with pytest.raises(ExportError, match=r"'deepseek2'.*it reads: .*llama"):
        gguf_to_hf(tiny_gguf_factory(arch="deepseek2"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
