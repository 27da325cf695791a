"""Greedy decoding helpers shared by the conversion tests: llama.cpp (1 thread) and transformers, same token ids in.

Both take prompt token ids and return the generated ids, so a comparison tests the weights, not the tokenizers.
llama.cpp loads without its extra CPU buffer types, like kaiyuan's engine (tests/conftest.py sets that for the test
process: natively built llama.cpp faults in its AMX kernels on VMs that advertise AMX).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PROMPTS", "common_prefix", "hf_greedy", "llama_greedy", "llama_tokens"]

PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
    "Water boils at a temperature of",
    "My favourite book is",
    "To make a cup of tea, first",
    "The largest planet in the solar system",
    "In 1969, astronauts",
    "A list of fruits: apple, banana,",
)


def llama_tokens(model_path: Path, text: str) -> list[int]:
    """``text`` tokenized by llama.cpp as a completion prompt (BOS as the model asks, no special parsing)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode(), add_bos=True, special=False))
    finally:
        llm.close()


def llama_greedy(model_path: Path, prompts: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """``n`` greedy tokens after each prompt, from llama.cpp on one thread (argmax of the logits each step)."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        str(model_path), n_ctx=256, n_threads=1, n_batch=256, logits_all=True, verbose=False
    )
    try:
        outputs = []
        for prompt in prompts:
            llm.reset()
            tokens = list(prompt)
            llm.eval(tokens)
            generated: list[int] = []
            for _ in range(n):
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                generated.append(token)
                llm.eval([token])
            outputs.append(generated)
        return outputs
    finally:
        llm.close()


def hf_greedy(folder: Path, prompts: Sequence[Sequence[int]], n: int, *, dtype: str) -> list[list[int]]:
    """``n`` greedy tokens after each prompt from transformers on the Hugging Face folder (no EOS stop)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype)).eval()
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            ids = list(prompt)
            generated: list[int] = []
            past = None
            step = torch.tensor([ids])
            for _ in range(n):
                out = model(step, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].float().argmax())
                generated.append(token)
                step = torch.tensor([[token]])
            outputs.append(generated)
    return outputs


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
