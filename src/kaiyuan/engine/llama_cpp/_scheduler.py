"""The scheduler thread: continuous batching over sequence slots of one llama.cpp context.

It owns the context and the batch; nothing else touches them while it runs. Each step it

1. drops cancelled requests (their slot is free for the next step) and admits waiting ones to free slots,
   reusing cached prefixes (``PrefixCache``; copying KV across slots with ``llama_memory_seq_cp``);
2. builds one batch: the next token of every generating sequence first, then chunks of prompts still being
   prefilled, up to ``n_batch`` tokens in all (chunked prefill), all of one LoRA adapter group (adapters are set
   per context, so groups take turns step by step);
3. calls ``llama_decode`` (the GIL is released during it), samples every sequence that produced logits with its
   own sampler chain, streams ``TokenEvent`` objects to the handles, and ends sequences on an end-of-generation
   token (``stop``), ``max_tokens`` or the context end (``length``).

Per-step Python work is a few calls per sequence. Knows nothing of HTTP, chat templates or model names.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

from llama_cpp import llama_cpp as lib

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import EngineStats, GenerationRequest, TokenEvent
from kaiyuan.engine._text_watch import ThinkTracker
from kaiyuan.engine.llama_cpp._batch import Batch
from kaiyuan.engine.llama_cpp._model import Model
from kaiyuan.engine.llama_cpp._prefix_cache import Plan, PrefixCache, Slot
from kaiyuan.engine.llama_cpp._sampler import Sampler, logprobs_of
from kaiyuan.errors import EngineError, Overloaded

__all__ = ["Job", "Scheduler"]

log = logging.getLogger(__name__)

# Steps one LoRA adapter set keeps the context before the next set's turn. Changing the set makes llama.cpp
# rebuild its compute graph: switching every step ran base + adapter traffic at 0.88x the speed of two separate
# engines, turns of 4 steps at 1.00x (8: 1.01x, 16: 1.03x) while the streams still advance in small bursts
# (benchmarks/adapter_bench.py, SmolLM2, 2 threads).
ADAPTER_TURN_STEPS = 4

# Seconds without work after which the scheduler thread ends (the next request starts a new one). On OpenMP builds
# each thread that ran llama.cpp compute keeps an OpenMP team while it lives, and with two such threads libgomp stops
# spinning at barriers: an idle engine's thread (another loaded model) would slow the busy one 2.5x
# (see _compute_thread.py).
IDLE_EXIT_S = 5.0


@dataclass(eq=False)
class Job:
    """One request as the scheduler tracks it."""

    request: GenerationRequest
    handle: GenerationHandle
    sampler: Sampler
    limit: int  # tokens it may generate: max_tokens capped by the context
    adapter: tuple[str, ...]  # resolved LoRA paths applied to this request (() for the base model)
    adapter_ptrs: list[Any] = field(default_factory=list)
    think: ThinkTracker | None = None
    forced_tokens: list[int] = field(default_factory=list)  # tokens of the think budget's end_text
    owes_answer: bool = False  # a grammar answer is owed: end-of-generation while thinking forces end_text
    slot: Slot | None = None
    pending: list[int] = field(default_factory=list)  # tokens to decode next: prompt remainder, then sampled
    prefilling: bool = True  # prompt tokens still to be queued for decoding
    out_index: int = -1  # batch index of this step's logits for this job, -1 when none
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))


class Scheduler:
    """Runs the decode loop on its own thread. ``enqueue`` is thread-safe; everything else runs on the thread."""

    def __init__(
        self,
        model: Model,
        ctx: Any,
        *,
        n_parallel: int,
        n_batch: int,
        max_queue: int,
        kv_unified: bool,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.mem = lib.llama_get_memory(ctx)
        self.n_parallel = n_parallel
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.kv_unified = kv_unified
        self.cache = PrefixCache(n_parallel)
        self.batch = Batch(n_batch)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._closed = False
        self._current_adapter: tuple[str, ...] = ()
        self._turn = 0
        self._stats = EngineStats(slots=n_parallel, kv_total_cells=int(lib.llama_n_ctx(ctx)))
        self.step_seconds = 0.0  # time spent in llama_decode in total (for benchmarks)
        self.steps = 0
        self._thread: threading.Thread | None = None

    # -- any thread --------------------------------------------------------------------------------
    def enqueue(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise EngineError("the engine is closed; load the model again")
            if len(self._waiting) + len(self._running) - self.n_parallel >= self.max_queue:
                raise Overloaded(
                    f"{len(self._waiting)} requests are already waiting for this model "
                    f"({self.n_parallel} run at once); retry shortly",
                    retry_after=1.0,
                )
            self._waiting.append(job)
            if self._thread is None:  # idle ended the last one (or none yet)
                self._thread = threading.Thread(target=self._run, name="kaiyuan-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wake(self, _handle: GenerationHandle | None = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def stats(self) -> EngineStats:
        with self._cond:
            return replace(
                self._stats,
                running=len(self._running),
                waiting=len(self._waiting),
                slots=self.n_parallel,
                kv_used_cells=sum(len(slot.tokens) for slot in self.cache.slots),
                by_adapters=self._counts_by_adapters(),
            )

    def _counts_by_adapters(self) -> dict[tuple[str, ...], tuple[int, int]]:
        running = Counter(job.adapter for job in self._running)
        waiting = Counter(job.adapter for job in self._waiting)
        return {key: (running[key], waiting[key]) for key in running.keys() | waiting.keys()}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._drain_closed()
        self.batch.close()

    # -- scheduler thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    if not self._cond.wait(timeout=IDLE_EXIT_S) and not (self._waiting or self._running):
                        self._thread = None  # idle: end, taking this thread's OpenMP team with it
                        return
                if self._closed:
                    break
                self._drop_cancelled_waiting()
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail the running requests, keep serving
                log.exception("engine step failed")
                for job in list(self._running):
                    self._fail(job, exc)
        for job in list(self._running):
            self._fail(job, EngineError("the engine was closed while this request ran"))

    def _drain_closed(self) -> None:
        """After close: end the requests that never started."""
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            job.sampler.free()
            job.handle.finish("cancelled", EngineError("the engine was closed before this request started"))

    def _drop_cancelled_waiting(self) -> None:
        for job in [j for j in self._waiting if j.handle.cancelled]:
            self._waiting.remove(job)
            job.sampler.free()
            job.handle.finish("cancelled")

    def _admit(self) -> None:
        """Move waiting requests into free slots (called with the lock held)."""
        while self._waiting and self.cache.has_free():
            job = self._waiting.popleft()
            plan = self.cache.plan(job.request.prompt, job.adapter)
            self._apply(plan)
            self.cache.occupy(plan, job.adapter)
            job.slot = plan.slot
            job.pending = list(job.request.prompt[plan.reuse :])
            job.handle.cached_tokens = plan.reuse
            self._stats.prompt_tokens += len(job.request.prompt)
            if plan.reuse:
                self._stats.prefix_cache_hits += 1
                self._stats.prefix_cache_tokens += plan.reuse
            self._running.append(job)

    def _apply(self, plan: Plan) -> None:
        seq = plan.slot.seq
        if plan.copy_from is None:
            lib.llama_memory_seq_rm(self.mem, seq, plan.reuse, -1)
            return
        src = plan.copy_from.seq
        lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
        if self.kv_unified:
            # One cell pool: the copy only tags the prefix cells with the new sequence id (exact, ~0.05 ms).
            lib.llama_memory_seq_cp(self.mem, src, seq, 0, plan.reuse)
        else:
            # Separate per-sequence buffers: llama.cpp copies only whole sequences; copy, then trim the tail.
            lib.llama_memory_seq_cp(self.mem, src, seq, -1, -1)
            lib.llama_memory_seq_rm(self.mem, seq, plan.reuse, -1)

    def _step(self) -> None:
        for job in [j for j in self._running if j.handle.cancelled]:
            self._finish(job, "cancelled")
        ready = [j for j in self._running if j.pending]
        if not ready:
            return
        group = self._choose_group(ready)
        batch = self.batch
        batch.clear()
        # Room goes to generating sequences first (one or a few tokens each), then to prompt chunks. The tokens go
        # into the batch in sequence-id order: with per-sequence KV buffers llama.cpp decodes each run of
        # consecutive, increasing sequence ids as its own micro-batch (llama_batch_allocr::split_equal), a whole
        # graph computation each: 8 streams in arrival order decoded 1.25-1.55x slower per step than in id order.
        chosen: list[tuple[Slot, Job, list[int]]] = []
        room = batch.free
        for job in sorted((j for j in ready if j.adapter == group), key=lambda j: j.prefilling):
            if room == 0:
                break
            assert job.slot is not None
            take = job.pending[:room]
            room -= len(take)
            chosen.append((job.slot, job, take))
        scheduled: list[Job] = []
        for slot, job, take in sorted(chosen, key=lambda c: c[0].seq):
            done = len(take) == len(job.pending)
            job.out_index = batch.add(take, len(slot.tokens), slot.seq, logits_last=done)
            if not done:
                job.out_index = -1
            elif job.prefilling:
                job.prefilling = False
            slot.tokens.extend(take)
            job.pending = job.pending[len(take) :]
            scheduled.append(job)
        raw = batch.ready()
        t0 = time.perf_counter()
        rc = lib.llama_decode(self.ctx, raw)
        self.step_seconds += time.perf_counter() - t0
        self.steps += 1
        if rc != 0:
            error = EngineError(f"llama.cpp failed to decode a batch of {batch.n} tokens (code {rc})")
            for job in scheduled:
                self._fail(job, error)
            return
        sampled = [
            job for job in scheduled if job.out_index >= 0
        ]  # prompt chunks without logits emit nothing
        for job in sampled:
            index, job.out_index = job.out_index, -1
            self._on_logits(job, index)
        # one event-loop wake-up for the whole step's tokens (finished handles woke on finish)
        GenerationHandle.wake_all(job.handle for job in sampled)

    def _choose_group(self, ready: list[Job]) -> tuple[str, ...]:
        """The adapter set whose sequences run this step; sets take turns of ``ADAPTER_TURN_STEPS`` steps.
        Applies it to the context."""
        groups = list(dict.fromkeys(j.adapter for j in ready))
        group = groups[(self._turn // ADAPTER_TURN_STEPS) % len(groups)] if len(groups) > 1 else groups[0]
        self._turn += 1
        if group != self._current_adapter:
            ptrs = next(j.adapter_ptrs for j in ready if j.adapter == group)
            arr = (lib.llama_adapter_lora_p_ctypes * len(ptrs))(*ptrs) if ptrs else None
            scales = (ctypes.c_float * len(ptrs))(*([1.0] * len(ptrs))) if ptrs else None
            if lib.llama_set_adapters_lora(self.ctx, arr, len(ptrs), scales) != 0:
                raise EngineError(f"llama.cpp could not apply the LoRA adapters {', '.join(group)}")
            self._current_adapter = group
        return group

    def _on_logits(self, job: Job, index: int) -> None:
        think = job.think
        if think is not None and think.should_force():  # a budget of 0: close thinking before sampling
            self._force(job)
            return
        token = job.sampler.sample(self.ctx, index)
        if self.model.is_eog(token):
            if job.owes_answer and think is not None and think.thinking:
                # the model stopped inside its thinking, but the grammar's answer is still owed: close the
                # thinking instead (the end-of-generation token is not decoded), then the grammar applies
                job.pending = []
                self._force(job)
                return
            self._finish(job, "stop")
            return
        logprob = None
        top: list[tuple[str, float]] = []
        sampling = job.request.sampling
        if sampling.logprobs:
            logprob, alts = logprobs_of(self.ctx, index, self.model.n_vocab, token, sampling.top_logprobs)
            top = [(self.model.token_text(t), lp) for t, lp in alts]
        self._emit(job, token, logprob, top, forced=False)
        if job.handle.generated_tokens >= job.limit:
            self._finish(job, "length")
            return
        job.pending = [token]
        if think is not None and think.should_force():
            self._force(job)

    def _force(self, job: Job) -> None:
        """The think budget is spent: inject the end-of-thinking tokens and carry on after them."""
        for token in job.forced_tokens:
            if job.handle.generated_tokens >= job.limit:
                break
            job.sampler.accept(token)
            self._emit(job, token, None, [], forced=True)
            job.pending.append(token)
        if job.handle.generated_tokens >= job.limit:
            self._finish(job, "length")

    def _emit(
        self, job: Job, token: int, logprob: float | None, top: list[tuple[str, float]], *, forced: bool
    ) -> None:
        text = job.decoder.decode(self.model.piece(token))
        if job.think is not None:
            job.think.feed(text)
        self._stats.generated_tokens += 1
        event = TokenEvent(token=token, text=text, logprob=logprob, top_logprobs=top, forced=forced)
        job.handle.push(event, wake=False)  # _step wakes every consumer once after the step

    def _finish(self, job: Job, reason: str, error: BaseException | None = None) -> None:
        job.sampler.free()
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            if job.slot is not None:
                self.cache.release(job.slot)
        job.handle.finish(reason, error)

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.slot is not None:
            lib.llama_memory_seq_rm(self.mem, job.slot.seq, -1, -1)
            self.cache.forget(job.slot)
        if not isinstance(error, EngineError):
            wrapped = EngineError(f"generation failed: {error}")
            wrapped.__cause__ = error
            error = wrapped
        self._finish(job, "stop", error)
