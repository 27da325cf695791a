"""Hugging Face folder → GGUF (``kaiyuan.convert.hf_to_gguf``): a GGUF taken to HF and back decodes exactly as before.

GGUF F32 → HF float32 → GGUF F32 moves every weight bit for bit (the llama Q/K permutation is undone and redone),
so llama.cpp's greedy tokens must match token for token: the bundled SmolLM2 (llama) and tiny random qwen2, qwen3
and llama models from ``tests/fixtures/tiny_gguf.py``, 10 prompts × 16 tokens, one thread.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.errors import ExportError, InvalidModelFile
from tests.convert.greedy import PROMPTS, llama_greedy, llama_tokens

pytestmark = pytest.mark.slow

N_TOKENS = 16


def f32_copy(source: Path, dest: Path) -> Path:
    """``source`` dequantized to an all-F32 GGUF by llama.cpp's own quantizer."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 1
    params.ftype = 0  # LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)) == 0
    return dest


def round_trip(source: Path, work: Path) -> tuple[Path, Path]:
    """(F32 GGUF, the same model after F32 GGUF → HF float32 → GGUF)."""
    pytest.importorskip("transformers")
    from kaiyuan.convert import gguf_to_hf, hf_to_gguf

    f32 = f32_copy(source, work / "model-f32.gguf")
    folder = gguf_to_hf(f32, work / "hf", dtype="float32")
    return f32, hf_to_gguf(folder, work / "back.gguf")


def assert_same_greedy_tokens(original: Path, converted: Path) -> None:
    prompts = [llama_tokens(original, text) for text in PROMPTS]
    assert llama_greedy(converted, prompts, N_TOKENS) == llama_greedy(original, prompts, N_TOKENS)


def test_smollm2_f32_round_trip_keeps_greedy_tokens_and_vocabulary(tmp_path: Path) -> None:
    import gguf

    from tests.fixtures.tiny_gguf import smollm2_path

    original, converted = round_trip(smollm2_path(), tmp_path)
    assert_same_greedy_tokens(original, converted)
    before, after = gguf.GGUFReader(str(original)), gguf.GGUFReader(str(converted))
    for key in (
        "general.architecture",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
        "llama.context_length",
        "llama.rope.freq_base",
    ):
        assert after.fields[key].contents() == before.fields[key].contents(), key
    assert sorted(t.name for t in after.tensors) == sorted(t.name for t in before.tensors)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_tiny_round_trip_keeps_greedy_tokens(
    arch: str, tmp_path: Path, tiny_gguf_factory: Callable[..., Path]
) -> None:
    original, converted = round_trip(tiny_gguf_factory(arch=arch), tmp_path)
    assert_same_greedy_tokens(original, converted)


def test_unknown_architecture_is_named_with_the_supported_ones(tmp_path: Path) -> None:
    from kaiyuan.convert import hf_to_gguf

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(
        ExportError, match=r"'GPT2LMHeadModel'.*supported: LlamaForCausalLM.*Qwen3ForCausalLM"
    ):
        hf_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_folder_without_config_or_weights_is_refused(tmp_path: Path) -> None:
    from kaiyuan.convert import hf_to_gguf

    with pytest.raises(InvalidModelFile, match=r"no config\.json"):
        hf_to_gguf(tmp_path, tmp_path / "out.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(InvalidModelFile, match=r"no \*.safetensors"):
        hf_to_gguf(tmp_path, tmp_path / "out.gguf")


def test_q4_1_round_trip_gives_the_original_file_back(smollm2_hf_dir: Path, tmp_path: Path) -> None:
    """Q4_1 → HF bf16 → GGUF BF16 → Q4_1: every tensor byte-identical to the bundled file (docs/convert.md)."""
    import gguf

    from kaiyuan.convert import hf_to_gguf
    from kaiyuan.export import quantize
    from tests.fixtures.tiny_gguf import smollm2_path

    bf16 = hf_to_gguf(smollm2_hf_dir, tmp_path / "bf16.gguf")
    assert gguf.GGUFReader(str(bf16)).fields["general.file_type"].contents() == int(
        gguf.LlamaFileType.MOSTLY_BF16
    )
    quantize(bf16, tmp_path / "q4_1.gguf", "Q4_1", threads=1)
    original = {t.name: t for t in gguf.GGUFReader(str(smollm2_path())).tensors}
    again = gguf.GGUFReader(str(tmp_path / "q4_1.gguf")).tensors
    assert sorted(t.name for t in again) == sorted(original)
    for tensor in again:
        before = original[tensor.name]
        assert tensor.tensor_type == before.tensor_type, tensor.name
        assert bytes(tensor.data.view("uint8")) == bytes(before.data.view("uint8")), tensor.name
