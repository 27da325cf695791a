"""The front's vocabulary (what it tokenizes prompts with before a replica sees them): a GGUF's llama.cpp
vocabulary loaded without weights, or a Hugging Face folder's own tokenizer; the same model in both formats gives
the same token ids for a rendered chat prompt and the same end-of-generation token."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import smollm2_path

from kaiyuan.cluster._vocabulary import load_vocabulary

pytestmark = pytest.mark.slow  # the HF copy of SmolLM2 is converted once per session

PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2? Ünïcode ✓<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_and_hugging_face_vocabularies_agree(smollm2_hf_dir: Path) -> None:
    gguf = load_vocabulary(smollm2_path())
    hf = load_vocabulary(smollm2_hf_dir)
    try:
        tokens = gguf.tokenize(PROMPT, add_special=False, parse_special=True)
        assert hf.tokenize(PROMPT, add_special=False, parse_special=True) == tokens
        assert hf.detokenize(tokens) == gguf.detokenize(tokens) == PROMPT
        (end,) = gguf.tokenize("<|im_end|>")
        assert gguf.is_eog(end) and hf.is_eog(end)
        assert hf.token_text(end) == gguf.token_text(end) == "<|im_end|>"
        # special-token text that is not to be parsed stays plain text
        assert len(hf.tokenize("<|im_end|>", parse_special=False)) > 1
        assert hf.n_vocab == gguf.n_vocab
    finally:
        gguf.close()
        hf.close()
