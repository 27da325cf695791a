"""Pooled sentence embeddings from a second llama.cpp context on the same model weights.

Owns that context (created with ``embeddings=True`` and a pooling layer: the model's own, or mean pooling when the
model declares none). Texts are packed into batches, one sequence each, and every vector is L2-normalised (as
llama-server and OpenAI return them). Runs on the caller's thread under a lock; the generation context is not
touched, so embeddings do not wait for the scheduler. Knows nothing of requests or HTTP.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_cpp import llama_cpp as lib

from kaiyuan.engine.llama_cpp._batch import Batch
from kaiyuan.engine.llama_cpp._compute_thread import in_fresh_thread
from kaiyuan.engine.llama_cpp._model import Model
from kaiyuan.errors import ContextOverflow, EngineError, InvalidRequest

__all__ = ["Embedder"]

MAX_SEQS = 16  # texts per decode call


class Embedder:
    def __init__(self, model: Model, *, n_ctx: int, n_threads: int) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self.ctx = self._context(n_threads, lib.LLAMA_POOLING_TYPE_UNSPECIFIED)
        if lib.llama_pooling_type(self.ctx) == lib.LLAMA_POOLING_TYPE_NONE:
            lib.llama_free(self.ctx)
            self.ctx = self._context(n_threads, lib.LLAMA_POOLING_TYPE_MEAN)
        self.pooling = int(lib.llama_pooling_type(self.ctx))
        self.dim = int(lib.llama_model_n_embd_out(model.ptr)) or model.n_embd
        self.batch = Batch(n_ctx)

    def _context(self, n_threads: int, pooling: int) -> Any:
        return self.model.new_context(
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            n_ubatch=self.n_ctx,  # pooled embeddings need a whole text in one micro-batch
            n_seq_max=MAX_SEQS,
            n_threads=n_threads,
            embeddings=True,
            pooling_type=pooling,
            kv_unified=True,
            failure="llama.cpp could not create an embedding context for this model (out of memory?)",
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        token_lists = [self.model.tokenize(t, add_special=True, parse_special=False) for t in texts]
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise InvalidRequest(f"input {i} is empty: nothing to embed", param="input")
            if len(tokens) > self.n_ctx:
                raise ContextOverflow(
                    f"input {i} has {len(tokens)} tokens but embeddings take at most {self.n_ctx}; shorten it",
                    prompt_tokens=len(tokens),
                    context_length=self.n_ctx,
                    param="input",
                )
        with self._lock:
            # on a thread that ends with the call: see _compute_thread (a long-lived caller thread that has
            # run llama.cpp compute slows the scheduler's decoding 2.5x on OpenMP builds)
            return in_fresh_thread(functools.partial(self._run_all, token_lists), name="kaiyuan-embed")

    def _run_all(self, token_lists: list[list[int]]) -> list[list[float]]:
        """Decode the inputs in groups that fit one context (at most ``MAX_SEQS`` each)."""
        out: list[list[float]] = []
        start = 0
        while start < len(token_lists):
            group = [token_lists[start]]
            used = len(group[0])
            while (
                start + len(group) < len(token_lists)
                and len(group) < MAX_SEQS
                and used + len(token_lists[start + len(group)]) <= self.n_ctx
            ):
                used += len(token_lists[start + len(group)])
                group.append(token_lists[start + len(group)])
            out.extend(self._run(group))
            start += len(group)
        return out

    def _run(self, group: list[list[int]]) -> list[list[float]]:
        mem = lib.llama_get_memory(self.ctx)
        lib.llama_memory_clear(mem, True)
        self.batch.clear()
        for seq, tokens in enumerate(group):
            self.batch.add(tokens, 0, seq, logits_last=True, logits_all=True)
        rc = lib.llama_decode(self.ctx, self.batch.ready())
        if rc != 0:
            raise EngineError(f"llama.cpp failed to compute embeddings (code {rc})")
        vectors = []
        for seq in range(len(group)):
            ptr = lib.llama_get_embeddings_seq(self.ctx, seq)
            if not ptr:
                raise EngineError("llama.cpp returned no pooled embedding for this model")
            vec = np.ctypeslib.as_array(ptr, shape=(self.dim,)).astype(np.float64)
            norm = float(np.linalg.norm(vec))
            vectors.append((vec / norm if norm > 0 else vec).tolist())
        return vectors

    def close(self) -> None:
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx = None
        self.batch.close()
