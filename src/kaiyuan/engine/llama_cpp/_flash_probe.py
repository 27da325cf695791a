"""Flash attention on or off for CPU decoding, chosen by measuring both at load time.

Whether llama.cpp's flash attention makes CPU decoding faster depends on the CPU and the context depth: on a
2-core AMD EPYC with AVX-512 it made short-context decode of 8 streams 10-14% faster, on other machines it was
slower past a few hundred tokens. No single default is right everywhere, so ``flash_attn="auto"`` measures: two
small contexts (one per setting) are filled to the same depth, then batches of one token per sequence are decoded
in alternation and the faster median wins. The probe keeps to a time budget: with a large model the depth and the
number of timed steps shrink instead of the load growing. Knows nothing of the scheduler or requests.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from llama_cpp import llama_cpp as lib

from kaiyuan.engine.llama_cpp._batch import Batch
from kaiyuan.engine.llama_cpp._model import Model

__all__ = ["FlashProbe", "probe_flash_attn"]

# One measurement per model file and setting in a process: a model evicted and loaded again is not re-measured.
_measured: dict[tuple[str, int, float, int, int], FlashProbe] = {}
_measured_lock = threading.Lock()

# Depth the probe fills each sequence to: a chat turn with a system prompt, the short context most requests decode at.
PROBE_DEPTH = 384
PROBE_CHUNK = 32  # prefill chunk, and the first chunk's time sets the depth the budget allows
MAX_SEQS = 8
ROUNDS = 4  # alternations of the two settings; each times STEPS decode steps
STEPS = 2
# Slowest over fastest step of one setting beyond which the machine was busy while measuring: on a quiet 2-core
# machine the steps varied up to 1.55x (the first after the prefill is slower); with a test run on the same cores,
# llama.cpp's threads stalled and steps took 5x longer.
BUSY_SPREAD = 3.0


@dataclass(frozen=True)
class FlashProbe:
    """What the probe measured: milliseconds per decode step (one token for each of ``seqs`` sequences at
    ``depth`` tokens of context) with flash attention off and on, and the choice."""

    off_ms: float
    on_ms: float
    depth: int
    seqs: int
    spread: float = 1.0  # slowest over fastest timed step of either setting

    @property
    def busy(self) -> bool:
        """The steps varied so much that the figures say more about other work on the cores than the setting."""
        return self.spread > BUSY_SPREAD

    @property
    def enabled(self) -> bool:
        # Ties go to "on", llama.cpp's own default for the CPU.
        return self.on_ms <= self.off_ms

    def describe(self) -> str:
        busy = (
            f"; steps varied {self.spread:.1f}x, so the cores were busy and the choice is a guess: "
            "pass --flash-attn on|off to decide"
            if self.busy
            else ""
        )
        return (
            f"flash attention {'on' if self.enabled else 'off'} (measured at load: {self.on_ms:.1f} ms on, "
            f"{self.off_ms:.1f} ms off per step of {self.seqs} tokens at depth {self.depth}{busy})"
        )


class _ProbeContext:
    """A small context with ``seqs`` sequences, filled to a common depth, that times one-token decode steps."""

    def __init__(self, model: Model, *, flash: bool, seqs: int, depth: int, n_threads: int) -> None:
        self.ctx: Any = model.new_context(
            n_ctx=(depth + STEPS * ROUNDS + 8) * seqs,
            n_batch=max(PROBE_CHUNK, seqs),
            n_ubatch=max(PROBE_CHUNK, seqs),
            n_seq_max=seqs,
            n_threads=n_threads,
            flash_attn_type=1 if flash else 0,
            failure="llama.cpp could not create the flash-attention probe context",
        )
        self.mem = lib.llama_get_memory(self.ctx)
        self.batch = Batch(max(PROBE_CHUNK, seqs))
        self.seqs = seqs
        self.pos = 0

    def prefill(self, tokens: list[int]) -> None:
        """Decode ``tokens`` into sequence 0 after what it holds."""
        self.batch.clear()
        self.batch.add(tokens, self.pos, 0, logits_last=True)
        if lib.llama_decode(self.ctx, self.batch.ready()) != 0:
            raise RuntimeError("probe prefill failed")
        self.pos += len(tokens)

    def share(self) -> None:
        """Give every sequence sequence 0's context (whole-sequence copies work with per-sequence buffers)."""
        for seq in range(1, self.seqs):
            lib.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)

    def step_ms(self, token: int) -> float:
        """Decode one token in every sequence; milliseconds."""
        self.batch.clear()
        for seq in range(self.seqs):
            self.batch.add([token], self.pos, seq, logits_last=True)
        t0 = time.perf_counter()
        rc = lib.llama_decode(self.ctx, self.batch.ready())
        elapsed = (time.perf_counter() - t0) * 1000
        if rc != 0:
            raise RuntimeError("probe decode failed")
        self.pos += 1
        return elapsed

    def close(self) -> None:
        self.batch.close()
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx = None


def probe_flash_attn(model: Model, *, n_threads: int, n_parallel: int, budget_s: float = 2.0) -> FlashProbe:
    """Measure CPU decoding with flash attention off and on (about ``budget_s`` seconds in all; once per model
    file, threads and sequences in a process). Raises on a llama.cpp failure; the caller falls back."""
    seqs = max(1, min(n_parallel, MAX_SEQS))
    stat = os.stat(model.path)
    key = (os.path.realpath(model.path), stat.st_size, stat.st_mtime, n_threads, seqs)
    with _measured_lock:
        found = _measured.get(key)
    if found is None:
        found = _measure(model, n_threads=n_threads, seqs=seqs, budget_s=budget_s)
        with _measured_lock:
            _measured[key] = found
    return found


def _measure(model: Model, *, n_threads: int, seqs: int, budget_s: float) -> FlashProbe:
    filler = _filler_tokens(model)
    contexts: list[_ProbeContext] = []
    try:
        contexts = [
            _ProbeContext(model, flash=flash, seqs=seqs, depth=PROBE_DEPTH, n_threads=n_threads)
            for flash in (False, True)
        ]
        depth = _fill(contexts, filler, budget_s * 0.6)  # the depth matters more than many steps
        for ctx in contexts:
            ctx.share()
        times: list[list[float]] = [[], []]
        token = filler[0]
        deadline = time.perf_counter() + budget_s * 0.4
        for round_ in range(ROUNDS):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)  # alternate who goes first
            for which in order:
                times[which].extend(contexts[which].step_ms(token) for _ in range(STEPS))
            if time.perf_counter() > deadline:  # a large model or a busy machine: one round has to do
                break
        return FlashProbe(
            off_ms=statistics.median(times[0]),
            on_ms=statistics.median(times[1]),
            depth=depth,
            seqs=seqs,
            spread=max(max(t) / min(t) for t in times),
        )
    finally:
        for ctx in contexts:
            ctx.close()


def _fill(contexts: list[_ProbeContext], filler: list[int], budget_s: float) -> int:
    """Prefill both contexts chunk by chunk up to ``PROBE_DEPTH`` tokens, fewer when the first chunks show the
    budget would not allow it (a large model); returns the depth reached."""
    started = time.perf_counter()
    depth = 0
    while depth < PROBE_DEPTH:
        chunk = [filler[(depth + i) % len(filler)] for i in range(PROBE_CHUNK)]
        for ctx in contexts:
            ctx.prefill(chunk)
        depth += PROBE_CHUNK
        spent = time.perf_counter() - started
        if spent / depth * (depth + PROBE_CHUNK) > budget_s:
            break
    return depth


def _filler_tokens(model: Model) -> list[int]:
    """Ordinary text tokens to fill the context with (their content does not change the cost)."""
    tokens = model.tokenize("The quick brown fox jumps over the lazy dog. " * 4)
    return [t for t in tokens if not model.is_eog(t)] or [0]
