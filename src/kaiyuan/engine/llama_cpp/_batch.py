"""A reusable ``llama_batch``: tokens of several sequences, each with its position and whether to output logits.

Owns the C allocation (``llama_batch_init`` / ``llama_batch_free``). Filling goes through numpy views of the
C arrays so that a prefill chunk of hundreds of tokens costs a few vectorised writes, not one ctypes call per field.
Knows nothing of requests or sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_cpp import llama_cpp as lib

__all__ = ["Batch"]


class Batch:
    """Up to ``capacity`` tokens, each in exactly one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = lib.llama_batch_init(capacity, 0, 1)
        self._token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self._pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self._n_seq = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self._logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        # seq_id is an array of per-token pointers (one sequence each here): write through the pointers.
        self._seq_ptrs = [self.raw.seq_id[i] for i in range(capacity)]
        self._n_seq[:] = 1
        self.n = 0

    @property
    def free(self) -> int:
        return self.capacity - self.n

    def clear(self) -> None:
        self.n = 0

    def ready(self) -> object:
        """The C struct to hand to ``llama_decode``, its token count set."""
        self.raw.n_tokens = self.n
        return self.raw

    def add(
        self, tokens: Sequence[int], start_pos: int, seq: int, *, logits_last: bool, logits_all: bool = False
    ) -> int:
        """Append ``tokens`` of sequence ``seq`` at positions ``start_pos``...; returns the batch index of the last
        one. Outputs are kept for the last token when ``logits_last``, for every token when ``logits_all``."""
        k = len(tokens)
        if k == 0 or k > self.free:
            raise ValueError(f"cannot add {k} tokens to a batch with {self.free} free places")
        i = self.n
        self._token[i : i + k] = tokens
        self._pos[i : i + k] = np.arange(start_pos, start_pos + k, dtype=self._pos.dtype)
        self._logits[i : i + k] = 1 if logits_all else 0
        if logits_last:
            self._logits[i + k - 1] = 1
        for ptr in self._seq_ptrs[i : i + k]:
            ptr[0] = seq
        self.n += k
        return i + k - 1

    def close(self) -> None:
        if self.raw is not None:
            lib.llama_batch_free(self.raw)
            self.raw = None
