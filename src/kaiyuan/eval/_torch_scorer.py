"""All-position next-token logits of a Hugging Face folder, from transformers (CPU, float32).

Owns scoring the one kind of model llama.cpp cannot load: the Hugging Face side of a conversion (``kaiyuan
convert`` measures a GGUF made from a folder against that folder, and a folder made from a GGUF against the GGUF).
It scores token ids the caller got from the GGUF side's tokenizer, so both sides read the very same windows.
torch and transformers are imported here only (``kaiyuan[tune]``). Knows nothing of perplexity or the store.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from kaiyuan.errors import MissingExtra

__all__ = ["TorchScorer"]


class TorchScorer:
    """A Hugging Face folder loaded for scoring: ``logits(window, first)`` as ``kaiyuan.eval``'s ``Scorer``."""

    def __init__(
        self, folder: str | os.PathLike[str], *, n_ctx: int, n_threads: int, bos: int | None
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise MissingExtra("tune", feature="scoring a Hugging Face folder") from exc
        self._torch = torch
        torch.set_num_threads(n_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers' deprecation chatter is not the user's business
            # float32 whatever the folder stores: bf16/f16 weights widen exactly, and the arithmetic adds no
            # rounding of its own, so the figures measure the weights.
            self.model: Any = AutoModelForCausalLM.from_pretrained(
                os.fspath(folder), dtype=torch.float32
            ).eval()
        self.n_ctx = n_ctx
        self._bos = bos
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        trained = getattr(self.model.config, "max_position_embeddings", None)
        self.n_ctx_train = int(trained) if isinstance(trained, int) else 0

    @property
    def bos(self) -> int | None:
        return self._bos

    def logits(self, window: list[int], first: int = 0) -> np.ndarray:
        """Logits after each token of ``window`` from index ``first`` on: shape (len - first, n_vocab)."""
        if not 0 < len(window) <= self.n_ctx or not 0 <= first < len(window):
            raise ValueError(f"a window holds 1..{self.n_ctx} tokens and outputs from one of them")
        torch = self._torch
        with torch.no_grad():
            out = self.model(torch.tensor([window], dtype=torch.long)).logits[0, first:]
        return np.ascontiguousarray(out.float().numpy())

    def close(self) -> None:
        self.model = None

    def __enter__(self) -> TorchScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
