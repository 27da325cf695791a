"""All-position next-token logits of one model over windows of tokens, from llama.cpp.

Owns a llama.cpp context of exactly one window (``n_ctx`` tokens, one sequence) on a loaded ``Model`` whose every
batch position outputs logits, and the tokenization of a corpus with that model's vocabulary. The KV cache is
cleared before each window, so windows are independent (as in ``llama-perplexity``). Does not start the serving
scheduler and knows nothing of perplexity, KL divergence or the store.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_cpp import llama_cpp as lib

from kaiyuan.engine.llama_cpp._batch import Batch
from kaiyuan.engine.llama_cpp._model import Model
from kaiyuan.errors import EngineError

__all__ = ["Scorer"]

MAX_UBATCH = 512  # llama-perplexity's default micro-batch


class Scorer:
    """A model loaded for scoring: ``logits(window, first)`` gives one row of ``n_vocab`` logits per token."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int,
        n_threads: int | None = None,
        adapters: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.model = Model(os.fspath(path))
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, len(os.sched_getaffinity(0)))
        self.ctx = None
        try:
            self.ctx = self._context()
            self._apply_adapters([os.fspath(a) for a in adapters])
        except BaseException:
            if self.ctx:
                lib.llama_free(self.ctx)
            self.model.close()
            raise
        self.batch = Batch(n_ctx)

    def _context(self) -> Any:
        return self.model.new_context(
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,  # one window per decode call
            n_ubatch=min(self.n_ctx, MAX_UBATCH),
            n_seq_max=1,
            n_threads=self.n_threads,
            embeddings=False,
            failure=f"llama.cpp could not create a context of {self.n_ctx} tokens for "
            f"{os.path.basename(self.model.path)}; lower --ctx (not enough memory?)",
        )

    def _apply_adapters(self, paths: list[str]) -> None:
        """LoRA adapters applied at scale 1 to every window (an adapter model is scored as it is served)."""
        if not paths:
            return
        ptrs = [self.model.adapter(path) for path in paths]
        arr = (lib.llama_adapter_lora_p_ctypes * len(ptrs))(*ptrs)
        scales = (ctypes.c_float * len(ptrs))(*([1.0] * len(ptrs)))
        if lib.llama_set_adapters_lora(self.ctx, arr, len(ptrs), scales) != 0:
            raise EngineError(f"llama.cpp could not apply the LoRA adapters {', '.join(paths)}")

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    @property
    def bos(self) -> int | None:
        """The token put at each window's start, or None when the model adds no BOS (llama-perplexity's rule)."""
        if not self.model.add_bos:
            return None
        token = int(lib.llama_vocab_bos(self.model.vocab))
        return token if token >= 0 else None

    def tokenize(self, text: str) -> list[int]:
        """The corpus as tokens: special-token text is kept as plain text, BOS added when the model wants it."""
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def vocabulary(self) -> list[bytes]:
        """Every token's bytes, by id: two models with equal lists give the same ids the same meaning."""
        return [self.model.piece(token) for token in range(self.n_vocab)]

    def logits(self, window: list[int], first: int = 0) -> np.ndarray:
        """Logits after each token of ``window`` from index ``first`` on (a fresh sequence from position 0):
        shape (len - first, n_vocab), a copy. Positions before ``first`` are decoded but output nothing, which
        spares their share of the output layer."""
        if not 0 < len(window) <= self.n_ctx or not 0 <= first < len(window):
            raise ValueError(f"a window holds 1..{self.n_ctx} tokens and outputs from one of them")
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        self.batch.clear()
        if first:
            self.batch.add(window[:first], 0, 0, logits_last=False)
        self.batch.add(window[first:], first, 0, logits_last=True, logits_all=True)
        rc = lib.llama_decode(self.ctx, self.batch.ready())
        if rc != 0:
            raise EngineError(f"llama.cpp failed to decode a window of {len(window)} tokens (code {rc})")
        ptr = lib.llama_get_logits(self.ctx)
        if not ptr:
            raise EngineError("llama.cpp returned no logits for the window")
        return np.ctypeslib.as_array(ptr, shape=(len(window) - first, self.n_vocab)).copy()

    def greedy(self, prompt: list[int], max_tokens: int) -> list[int]:
        """The most likely continuation of ``prompt`` (a fresh sequence), token by token, until an end-of-generation
        token, ``max_tokens`` or the end of the context: deterministic, as an answer check needs."""
        if not 0 < len(prompt) < self.n_ctx:
            raise ValueError(f"a prompt holds 1..{self.n_ctx - 1} tokens")
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        out: list[int] = []
        step = prompt
        pos = 0
        while True:
            self.batch.clear()
            self.batch.add(step, pos, 0, logits_last=True)
            rc = lib.llama_decode(self.ctx, self.batch.ready())
            if rc != 0:
                raise EngineError(f"llama.cpp failed to decode {len(step)} tokens (code {rc})")
            pos += len(step)
            row = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            token = int(row.argmax())
            if self.model.is_eog(token) or len(out) >= max_tokens or pos >= self.n_ctx:
                return out
            out.append(token)
            step = [token]

    def close(self) -> None:
        if getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "batch", None) is not None:
            self.batch.close()
        self.model.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
