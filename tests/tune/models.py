"""Shared helpers for tune/export tests: the bundled SmolLM2, an F32 copy of it, and loading either into torch.

Heavy: importing torch/transformers happens inside the functions, and tests that use them skip cleanly when the
``tune`` extra is not installed.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.tiny_gguf import smollm2_path

__all__ = [
    "TEXT",
    "hf_model",
    "llama_logits",
    "logit_agreement",
    "make_f32_copy",
    "needs_tune",
    "smollm2_path",
]

# ~300 tokens of ordinary prose: the equivalence tests compare next-token logits at every position of it.
TEXT = (
    "The history of the bicycle is a story of small improvements. The first machines, built in the early "
    "nineteenth century, had no pedals at all: riders pushed themselves along with their feet. Pedals attached "
    "to the front wheel came decades later, and with them the penny-farthing, whose huge front wheel made each "
    "turn of the cranks carry the rider further. It was fast but dangerous, and a fall from that height could "
    "be serious. The safety bicycle solved the problem with two wheels of equal size and a chain that drove the "
    "rear wheel. Pneumatic tyres, invented soon after, made the ride comfortable enough for long journeys. By "
    "the end of the century, millions of people used bicycles to get to work, to visit friends and to explore "
    "the countryside. Women in particular gained a new kind of freedom, and clothing changed to suit the new "
    "activity. Today engineers still refine the design: lighter frames, better brakes and gears that shift "
    "without effort. Yet a rider from 1890 would recognise a modern bicycle at once, because the basic idea has "
    "hardly changed. Two wheels, a frame, a chain and a person willing to push the pedals remain enough to "
    "travel quickly, quietly and cheaply almost anywhere. In many cities, bicycle lanes now run beside the roads, "
    "and shared bicycles wait at stations for anyone with a phone. Doctors praise cycling as exercise that fits "
    "into daily life, and planners value it because it needs little space and makes no noise."
)


def needs_tune() -> None:
    """Skip the calling test when the tune extra (torch, transformers, peft) is not installed."""
    for module in ("torch", "transformers", "peft", "safetensors"):
        pytest.importorskip(module)


def make_f32_copy(dest: Path) -> Path:
    """SmolLM2 dequantized to F32 by llama.cpp's own quantizer (exactly the Q4_1 values, as floats)."""
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp prints every tensor otherwise
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 1
    params.ftype = 0  # LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(
        str(smollm2_path()).encode(), str(dest).encode(), ctypes.byref(params)
    )
    assert rc == 0, "llama.cpp could not write the F32 copy"
    return dest


def hf_model(path: Path) -> Any:
    """A GGUF loaded into transformers (dequantized, float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    return model.eval()


@functools.cache
def text_tokens() -> tuple[int, ...]:
    import llama_cpp

    llm = llama_cpp.Llama(str(smollm2_path()), vocab_only=True, verbose=False)
    try:
        return tuple(llm.tokenize(TEXT.encode(), add_bos=False, special=False))
    finally:
        llm.close()


def llama_logits(model_path: Path, tokens: tuple[int, ...], adapter: Path | None = None) -> np.ndarray:
    """Next-token logits of llama.cpp at every position (1 thread), with an optional LoRA adapter."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model_path),
        lora_path=str(adapter) if adapter else None,
        logits_all=True,
        n_ctx=512,
        n_batch=512,
        n_threads=1,
        verbose=False,
    )
    try:
        llm.eval(list(tokens))
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def torch_logits(model: Any, tokens: tuple[int, ...]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(tokens)])).logits[0].float().numpy()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def logit_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """top-1 agreement, max |difference| and mean KL(reference || other) over positions."""
    p, q = _log_softmax(reference), _log_softmax(other)
    return {
        "top1": float((reference.argmax(-1) == other.argmax(-1)).mean()),
        "max_abs": float(np.abs(reference - other).max()),
        "mean_kl": float((np.exp(p) * (p - q)).sum(-1).mean()),
        "positions": float(reference.shape[0]),
    }
