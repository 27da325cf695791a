"""LlamaCppEngine: the ``Engine`` protocol on llama.cpp, through llama-cpp-python's low-level API.

Owns one model, one generation context (``n_parallel`` sequences of ``n_ctx`` tokens each, in one KV cache),
the scheduler thread that drives it, and a lazily created embedding context. ``submit`` validates a request on
the caller's thread (context fit, vocabulary, grammar, adapter) so that errors surface there, then queues it.
Knows nothing of HTTP, chat templates, model names or the store.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from llama_cpp import llama_cpp as lib

from kaiyuan.engine._admission import check_request, generation_limit
from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import EngineStats, GenerationRequest, ThinkBudget
from kaiyuan.engine._text_watch import ThinkTracker
from kaiyuan.engine.llama_cpp._compute_thread import in_fresh_thread
from kaiyuan.engine.llama_cpp._embedder import Embedder
from kaiyuan.engine.llama_cpp._flash_probe import FlashProbe, probe_flash_attn
from kaiyuan.engine.llama_cpp._model import Model, default_gpu_layers, gpu_offload_supported
from kaiyuan.engine.llama_cpp._sampler import Sampler
from kaiyuan.engine.llama_cpp._scheduler import Job, Scheduler
from kaiyuan.errors import ConfigError, EngineError

__all__ = ["FLASH_ATTN", "LlamaCppEngine"]

log = logging.getLogger(__name__)

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


class LlamaCppEngine:
    """A GGUF model served with continuous batching over ``n_parallel`` sequence slots.

    ``n_ctx`` is the context of one sequence (tokens); the KV cache holds ``n_ctx * n_parallel`` cells.
    ``n_batch`` caps the tokens decoded per step (prompt chunks included). ``flash_attn="auto"`` (the default)
    lets llama.cpp choose when layers are on a GPU; on the CPU it measures decoding both ways at load and keeps
    the faster (``_flash_probe``: which one wins depends on the CPU); ``on``/``off`` force it. ``kv_unified``
    keeps all sequences in one KV pool, which makes cross-slot prefix copies exact and nearly free; see docs/engine.md for
    the measured trade-off. ``gpu_layers`` layers go to the GPU (None: all of them when llama.cpp was built
    with a GPU backend, else 0). ``adapters`` are GGUF LoRA files applied (stacked, scale 1) to every request that
    does not name its own ``GenerationRequest.adapters``. A request's ``adapters`` replace them for that request
    (``()``: the bare base), which is how one engine serves a base model and adapter models of it at once;
    adapter files load once, on first use.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 4,
        n_threads: int | None = None,
        n_batch: int = 512,
        flash_attn: str = "auto",
        max_queue: int = 64,
        embedding: bool = False,
        adapters: Sequence[str] = (),
        kv_unified: bool = False,
        gpu_layers: int | None = None,
    ) -> None:
        if flash_attn not in FLASH_ATTN:
            raise ConfigError(f"flash_attn must be one of {', '.join(FLASH_ATTN)}, got {flash_attn!r}")
        if n_ctx < 8 or n_parallel < 1 or n_batch < 1 or max_queue < 0:
            raise ConfigError("n_ctx must be >= 8, n_parallel >= 1, n_batch >= 1 and max_queue >= 0")
        self.model_path = os.fspath(model_path)
        self.n_threads = n_threads or max(1, len(os.sched_getaffinity(0)))
        self.gpu_layers = default_gpu_layers() if gpu_layers is None else gpu_layers
        if self.gpu_layers and not gpu_offload_supported():
            raise ConfigError(
                f"--gpu-layers {self.gpu_layers}: this llama.cpp build has no GPU backend; reinstall "
                "llama-cpp-python with CUDA, Metal or Vulkan (see the README) or leave --gpu-layers at 0"
            )
        self.model = Model(self.model_path, gpu_layers=self.gpu_layers)
        self.n_vocab = self.model.n_vocab
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.kv_unified = kv_unified
        self._closed = False
        self._embedder: Embedder | None = None
        self._embed_lock = threading.Lock()
        self.flash_probe: FlashProbe | None = None
        try:
            flash_attn = self._resolve_flash_attn(flash_attn, n_parallel)
            self.default_adapters = tuple(self.model.adapter_key(p) for p in adapters)
            self._default_ptrs = [self.model.adapter(p) for p in self.default_adapters]
            self.ctx = self._context(n_ctx, n_parallel, n_batch, flash_attn, kv_unified)
            n_ctx_seq = int(lib.llama_n_ctx_seq(self.ctx))
            if n_ctx_seq < n_ctx:  # llama.cpp never gives less, but the limit below must hold
                self.n_ctx = n_ctx_seq
            self.scheduler = Scheduler(
                self.model,
                self.ctx,
                n_parallel=n_parallel,
                n_batch=max(n_batch, n_parallel),
                max_queue=max_queue,
                kv_unified=kv_unified,
            )
        except BaseException:
            if getattr(self, "ctx", None):
                lib.llama_free(self.ctx)
            self.model.close()
            raise
        if embedding:
            self._get_embedder()

    @property
    def description(self) -> str:
        """What it runs on, for ``kaiyuan serve`` and ``ps``."""
        where = f"{self.gpu_layers} layers on the GPU" if self.gpu_layers else "CPU"
        flash = f", {self.flash_probe.describe()}" if self.flash_probe is not None else ""
        threads = f"{self.n_threads} thread{'s' if self.n_threads != 1 else ''}"
        return f"llama.cpp ({where}, {threads}{flash})"

    def _resolve_flash_attn(self, flash_attn: str, n_parallel: int) -> str:
        """``auto`` on the CPU becomes ``on`` or ``off`` from a measurement; llama.cpp decides for GPU layers."""
        if flash_attn != "auto" or self.gpu_layers:
            return flash_attn
        try:
            # on a thread that ends with it: the loader's thread lives on (see _compute_thread)
            self.flash_probe = in_fresh_thread(
                lambda: probe_flash_attn(self.model, n_threads=self.n_threads, n_parallel=n_parallel),
                name="kaiyuan-flash-probe",
            )
        except (EngineError, RuntimeError) as exc:  # the probe is an optimisation: never fail a load over it
            log.warning("flash attention probe failed (%s); letting llama.cpp choose", exc)
            return "auto"
        log.info("%s", self.flash_probe.describe())
        return "on" if self.flash_probe.enabled else "off"

    def _context(self, n_ctx: int, n_parallel: int, n_batch: int, flash_attn: str, kv_unified: bool) -> Any:
        return self.model.new_context(
            n_ctx=n_ctx * n_parallel,
            n_batch=max(n_batch, n_parallel),
            n_ubatch=max(n_batch, n_parallel),
            n_seq_max=n_parallel,
            n_threads=self.n_threads,
            flash_attn_type=FLASH_ATTN[flash_attn],
            kv_unified=kv_unified,
            embeddings=False,
            failure=f"llama.cpp could not create a context of {n_parallel} x {n_ctx} tokens for "
            f"{os.path.basename(self.model_path)}; lower --ctx or --parallel (not enough memory?)",
        )

    # -- vocabulary --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.model.detokenize(tokens)

    def token_text(self, token: int) -> str:
        return self.model.token_text(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)

    # -- generation --------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        if self._closed:
            raise EngineError("the engine is closed; load the model again")
        check_request(request, self.n_ctx, self.n_vocab)
        if request.adapters is None:
            adapter, adapter_ptrs = self.default_adapters, self._default_ptrs
        else:
            adapter = tuple(self.model.adapter_key(p) for p in request.adapters)
            adapter_ptrs = [self.model.adapter(p) for p in request.adapters]
        budget = request.think_budget
        # A grammar that applies after ``grammar_after`` (a forced tool call or JSON answer after thinking) means an
        # answer is owed: track that text even without a budget, so that an end-of-generation token sampled
        # before it closes the thinking (the text is forced, like a spent budget) instead of ending unanswered.
        owes_answer = False
        if request.grammar and request.grammar_after:
            if budget is None:
                budget = ThinkBudget(max_tokens=sys.maxsize, end_text=request.grammar_after)
            owes_answer = budget.end_text == request.grammar_after
        think = ThinkTracker(budget) if budget is not None else None
        forced = self.tokenize(budget.end_text) if budget is not None else []
        sampler = Sampler.build(self.model, request)
        handle = GenerationHandle(len(request.prompt), on_cancel=self.scheduler.wake)
        job = Job(
            request=request,
            handle=handle,
            sampler=sampler,
            limit=generation_limit(request, self.n_ctx),
            adapter=adapter,
            adapter_ptrs=adapter_ptrs,
            think=think,
            forced_tokens=forced,
            owes_answer=owes_answer,
        )
        if job.limit == 0:
            sampler.free()
            handle.finish("length")
            return handle
        try:
            self.scheduler.enqueue(job)
        except BaseException:
            sampler.free()
            raise
        return handle

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self._get_embedder().embed(texts)

    def _get_embedder(self) -> Embedder:
        with self._embed_lock:
            if self._closed:
                raise EngineError("the engine is closed; load the model again")
            if self._embedder is None:
                self._embedder = Embedder(self.model, n_ctx=self.n_ctx, n_threads=self.n_threads)
            return self._embedder

    def stats(self) -> EngineStats:
        return self.scheduler.stats()

    def close(self) -> None:
        """Stop the scheduler (running requests end with an ``EngineError``) and free all llama.cpp memory."""
        with self._embed_lock:
            if self._closed:
                return
            self._closed = True
            embedder, self._embedder = self._embedder, None
        self.scheduler.close()
        if embedder is not None:
            embedder.close()
        lib.llama_free(self.ctx)
        self.ctx = None
        self.model.close()

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
