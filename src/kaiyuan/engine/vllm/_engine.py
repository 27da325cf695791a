"""VllmEngine: the ``Engine`` protocol on vLLM's v1 ``AsyncLLM``, for Hugging Face-format model folders.

vLLM runs its engine core in a process of its own; this object owns the ``AsyncLLM`` client, an asyncio event
loop on a thread of its own that drives it (``submit`` may be called from any thread, as the protocol says),
the model's Hugging Face tokenizer (the same one vLLM uses) and the LoRA adapters it has been asked for.
Each request runs through ``PhaseRunner`` (grammar after ``</think>``, thinking budget, owed answer).

Statistics come from vLLM itself: a stat logger receives the scheduler's running/waiting counts and KV-cache use
every step; prefix-cache hits are vLLM's ``num_cached_tokens`` per request.

Knows nothing of HTTP, chat templates, model names or the store. Importing this module imports vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers.decoders import DecodeStream

from kaiyuan.engine._admission import check_request, generation_limit
from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._hf_vocabulary import HFVocabulary
from kaiyuan.engine._protocol import EngineStats, GenerationRequest
from kaiyuan.engine.vllm._cpu_env import start_lock
from kaiyuan.engine.vllm._embedder import Pooler, embed_inputs, kv_bytes_for
from kaiyuan.engine.vllm._lora_check import check_lora_fits
from kaiyuan.engine.vllm._params import grammar_for_vllm
from kaiyuan.engine.vllm._phases import PhaseRunner, RequestCounters
from kaiyuan.engine.vllm._wakeups import StepWaker
from kaiyuan.errors import EngineError, InvalidRequest, Overloaded

__all__ = ["VllmEngine", "VllmOptions"]

log = logging.getLogger(__name__)

# Prompt tokens the incremental decoder is primed with, so the first generated token keeps its leading space
# (SentencePiece decoders strip it at the start of a text).
_DECODER_CONTEXT = 8


@dataclass(frozen=True)
class VllmOptions:
    """vLLM settings kaiyuan passes through (``kaiyuan serve --dtype`` … and ``[vllm]`` in kaiyuan.toml)."""

    dtype: str = "auto"  # weights/activations dtype: auto | bfloat16 | float16 | float32
    gpu_memory_utilization: float = 0.9  # share of GPU memory vLLM may take (GPU only)
    tensor_parallel_size: int = 1  # GPUs one model is split across
    pipeline_parallel_size: int = 1  # pipeline stages (GPUs or nodes, through Ray)
    kv_cache_gib: int | None = (
        None  # CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE, whole GiB); None: vLLM's default
    )
    cpu_threads: int | None = None  # CPU: cores vLLM binds its threads to (the first N); None: all
    enforce_eager: bool = True  # no graph capture/compile: fast start; off for peak GPU speed
    enable_lora: bool = False  # per-request LoRA adapters (costs some speed; on when the model has adapters)
    max_lora_rank: int = 64  # largest LoRA rank accepted
    max_loras: int = 4  # LoRA adapters active in one batch
    block_size: int | None = (
        None  # KV-cache block (tokens; prefix caching reuses whole blocks); None: 32 on CPU
    )
    distributed_executor_backend: str | None = None  # "ray" for multi-node tensor/pipeline parallel


class _Decoder:
    """Incremental detokenizer for one request: ``step(token)`` → the text it completes ('' while a UTF-8
    sequence is incomplete)."""

    def __init__(self, backend: Any, context: Sequence[int]) -> None:
        self._backend = backend
        self._stream = DecodeStream(ids=list(context), skip_special_tokens=False)

    def step(self, token: int) -> str:
        return self._stream.step(self._backend, token) or ""


class _Stats:
    """Latest scheduler figures, written by vLLM's stat-logger callback (on the engine loop)."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.lora_running: dict[str, int] = {}
        self.lora_waiting: dict[str, int] = {}


def _stat_logger_class(sink: _Stats) -> type:
    """A stat logger that keeps the scheduler's latest figures in ``sink``.

    It takes the place of vLLM's ``PrometheusStatLogger`` (vLLM adds one unless a custom logger is one): that
    logger updates some forty metrics in the global Prometheus registry on every step, which kaiyuan's
    ``/metrics`` (its own registry) never exports, and at 8 streams on a small CPU the work shows in tokens/s."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    class KaiyuanStatLogger(PrometheusStatLogger):
        def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
            self.engine_indexes = engine_indexes or [0]  # no super().__init__: it registers the metrics

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is None:
                return
            sink.running = int(scheduler_stats.num_running_reqs)
            sink.waiting = int(scheduler_stats.num_waiting_reqs)
            sink.kv_usage = float(scheduler_stats.kv_cache_usage)
            sink.lora_running = dict(getattr(scheduler_stats, "running_lora_adapters", {}) or {})
            sink.lora_waiting = dict(getattr(scheduler_stats, "waiting_lora_adapters", {}) or {})

        def record_sleep_state(self, sleep: int = 0, level: int = 0) -> None:
            pass

        def record_admission_rejection(self, reason: str) -> None:
            pass

        def log(self) -> None:
            pass

        def log_engine_initialized(self) -> None:
            pass

    return KaiyuanStatLogger


class VllmEngine:
    """A Hugging Face-format model folder served by vLLM with continuous batching and automatic prefix caching.

    ``n_ctx`` is vLLM's ``max_model_len`` (one sequence); ``n_parallel`` its ``max_num_seqs``. ``adapters`` are
    PEFT LoRA folders applied to requests that name none (``GenerationRequest.adapters``); a request's own
    adapters replace them (``()``: the bare base). vLLM applies one LoRA per request.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 4,
        max_queue: int = 64,
        adapters: Sequence[str] = (),
        options: VllmOptions | None = None,
    ) -> None:
        self.model_path = os.fspath(model_path)
        self.n_parallel = n_parallel
        self.max_queue = max_queue
        self.options = options or VllmOptions()
        self._closed = False
        self._inflight = 0
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._counters = RequestCounters()
        self._loras: dict[str, Any] = {}  # real path -> LoRARequest
        self._pooler: Pooler | EngineError | None = None  # the embedding engine, or why it could not start
        self._pooler_lock = threading.Lock()
        self.default_adapters = tuple(self._lora_key(p) for p in adapters)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kaiyuan-vllm", daemon=True)
        self._thread.start()
        self._waker = StepWaker(self._loop, self._thread)
        try:
            self.llm = self._call(self._start(n_ctx, n_parallel))
        except BaseException:
            self._stop_loop()
            raise
        self.tokenizer = self.llm.get_tokenizer()
        self._backend = getattr(self.tokenizer, "backend_tokenizer", None) or self.tokenizer._tokenizer
        self.n_ctx = int(self.llm.model_config.max_model_len)
        self.n_vocab = int(self.llm.model_config.get_vocab_size())
        self.vocabulary = HFVocabulary(self.tokenizer, Path(self.model_path))
        self.eog = self.vocabulary.eog
        cache = self.llm.vllm_config.cache_config
        self._kv_total = int((cache.num_gpu_blocks or 0) * cache.block_size)

    @property
    def description(self) -> str:
        """What it runs on, for ``kaiyuan serve`` and ``ps``."""
        import vllm

        device = self.llm.vllm_config.device_config.device_type
        parallel = self.options.tensor_parallel_size * self.options.pipeline_parallel_size
        return f"vLLM {vllm.__version__} ({device}{f', {parallel} GPUs' if parallel > 1 else ''})"

    # -- start and stop ----------------------------------------------------------------------------
    async def _start(self, n_ctx: int, n_parallel: int) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        opts = self.options
        # vLLM's CPU build reads these while it is configured and in its engine process, which inherits this
        # environment (the KV size is set under start_lock, below: the embedding engine starts without it).
        cores = sorted(os.sched_getaffinity(0))
        if (
            opts.cpu_threads
            and opts.cpu_threads < len(cores)
            and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
        ):
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cores[: opts.cpu_threads])
        settings: dict[str, Any] = dict(
            model=self.model_path,
            tokenizer=self.model_path,
            dtype=opts.dtype,
            max_model_len=n_ctx,
            max_num_seqs=n_parallel,
            enable_prefix_caching=True,
            enforce_eager=opts.enforce_eager,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            tensor_parallel_size=opts.tensor_parallel_size,
            pipeline_parallel_size=opts.pipeline_parallel_size,
            distributed_executor_backend=opts.distributed_executor_backend,
            enable_lora=opts.enable_lora or bool(self.default_adapters),
            max_lora_rank=opts.max_lora_rank,
            max_loras=opts.max_loras,
            disable_log_stats=False,
            seed=0,
            # xgrammar reads llama.cpp's GBNF as its own EBNF (token elements aside, see _params.grammar_for_vllm)
            structured_outputs_config={"backend": "xgrammar"},
            # Prefix caching works in whole blocks: vLLM's CPU default of 128 tokens would leave chat prompts
            # (tens of tokens) uncached. 32 is the smallest size the CPU attention kernels are tuned for.
            block_size=opts.block_size or (32 if _on_cpu() else None),
        )
        if _on_cpu() and opts.kv_cache_gib is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM's CPU default asks for 90% of the machine's memory and refuses to start when that much is
            # not free; room for every sequence slot at full context is what the settings can use.
            settings["kv_cache_memory_bytes"] = n_parallel * kv_bytes_for(Path(self.model_path), n_ctx)
        args = AsyncEngineArgs(**settings)
        try:
            with start_lock:
                if opts.kv_cache_gib is not None:
                    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(opts.kv_cache_gib)
                return AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_class(self._stats)])
        except Exception as exc:
            raise EngineError(f"vLLM could not load {self.model_path}: {_first_line(exc)}") from exc

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def close(self) -> None:
        """Abort running requests, stop vLLM's engine process and the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._pooler_lock:
            pooler, self._pooler = self._pooler, None
        try:
            if isinstance(pooler, Pooler):
                pooler.close()
            self.llm.shutdown()
        finally:
            self._stop_loop()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- vocabulary --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.vocabulary.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.vocabulary.detokenize(tokens)

    def token_text(self, token: int) -> str:
        return self.vocabulary.token_text(token)

    def is_eog(self, token: int) -> bool:
        return token in self.eog

    # -- LoRA ----------------------------------------------------------------------------------------
    def _lora_key(self, path: str) -> str:
        real = os.path.realpath(path)
        if not os.path.isfile(os.path.join(real, "adapter_config.json")):
            raise InvalidRequest(
                f"{path} is not a PEFT LoRA folder (no adapter_config.json); vLLM loads PEFT adapters",
                param="adapters",
            )
        check_lora_fits(Path(real), Path(self.model_path))
        return real

    def _lora(self, adapters: tuple[str, ...]) -> Any:
        if not adapters:
            return None
        if len(adapters) > 1:
            raise InvalidRequest("vLLM applies one LoRA adapter per request, not a stack", param="adapters")
        from vllm.lora.request import LoRARequest

        key = adapters[0]
        with self._lock:
            lora = self._loras.get(key)
            if lora is None:
                lora = LoRARequest(os.path.basename(key) or key, len(self._loras) + 1, key)
                self._loras[key] = lora
        return lora

    # -- generation --------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        if self._closed:
            raise EngineError("the engine is closed; load the model again")
        check_request(request, self.n_ctx, self.n_vocab)
        adapters = (
            self.default_adapters
            if request.adapters is None
            else tuple(self._lora_key(p) for p in request.adapters)
        )
        if adapters and not self.llm.vllm_config.lora_config:
            raise InvalidRequest(
                "this vLLM engine was started without LoRA support; reload the model (it starts with LoRA "
                "when the store holds adapter models of it)",
                param="adapters",
            )
        lora = self._lora(adapters)
        if request.grammar:
            check_grammar(grammar_for_vllm(request.grammar, self.token_text))
        with self._lock:
            if self._inflight - self.n_parallel >= self.max_queue:
                raise Overloaded(
                    f"{self._inflight - self.n_parallel} requests are already waiting for this model "
                    f"({self.n_parallel} run at once); retry shortly",
                    retry_after=1.0,
                )
            self._inflight += 1
        running: list[Future[None]] = []

        def cancel(_handle: GenerationHandle) -> None:
            for future in running:
                future.cancel()

        handle = GenerationHandle(len(request.prompt), on_cancel=cancel, waker=self._waker.wake)
        self._counters.prompt_tokens += len(request.prompt)
        limit = generation_limit(request, self.n_ctx)
        if limit == 0:
            self._done()
            handle.finish("length")
            return handle
        runner = PhaseRunner(
            llm=self.llm,
            request=request,
            handle=handle,
            limit=limit,
            lora=lora,
            decoder=lambda: _Decoder(self._backend, request.prompt[-_DECODER_CONTEXT:]),
            token_text=self.token_text,
            tokenize=lambda text: self.tokenize(text, add_special=False, parse_special=True),
            eog=self.eog,
            counters=self._counters,
        )
        # Cancelling the future cancels the task on the loop; vLLM's generate() aborts the request on it.
        running.append(asyncio.run_coroutine_threadsafe(self._run(runner), self._loop))
        return handle

    async def _run(self, runner: PhaseRunner) -> None:
        try:
            await runner.run()
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._inflight -= 1

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Pooled, L2-normalised vectors from a second, pooling vLLM engine on the same folder, started on the
        first call (vLLM runs one model runner per engine: see ``_embedder.py``)."""
        tokens = embed_inputs(
            texts, lambda text: self.tokenize(text, add_special=True, parse_special=False), self.n_ctx
        )
        return self._get_pooler().embed(tokens)

    def _get_pooler(self) -> Pooler:
        with self._pooler_lock:
            if self._closed:
                raise EngineError("the engine is closed; load the model again")
            if isinstance(self._pooler, EngineError):  # a failed start is not retried on every request
                raise self._pooler
            if self._pooler is None:
                pooler = Pooler(
                    self.model_path,
                    n_ctx=self.n_ctx,
                    dtype=self.options.dtype,
                    tensor_parallel_size=self.options.tensor_parallel_size,
                )
                try:
                    pooler.start()
                except EngineError as exc:
                    pooler.close()
                    self._pooler = exc
                    raise
                self._pooler = pooler
            return self._pooler

    def stats(self) -> EngineStats:
        s, c = self._stats, self._counters
        if (
            self._inflight == 0
        ):  # vLLM's last record may predate an abort; with nothing of ours in flight, it is idle
            s.running = s.waiting = 0
            s.lora_running, s.lora_waiting = {}, {}
        by_adapters: dict[tuple[str, ...], tuple[int, int]] = {}
        names = {lora.lora_name: key for key, lora in self._loras.items()}
        lora_running = sum(s.lora_running.values())
        lora_waiting = sum(s.lora_waiting.values())
        for name in set(s.lora_running) | set(s.lora_waiting):
            key = names.get(name)
            if key is not None:
                by_adapters[(key,)] = (s.lora_running.get(name, 0), s.lora_waiting.get(name, 0))
        by_adapters[()] = (max(s.running - lora_running, 0), max(s.waiting - lora_waiting, 0))
        return EngineStats(
            running=s.running,
            waiting=s.waiting,
            slots=self.n_parallel,
            kv_used_cells=round(s.kv_usage * self._kv_total),
            kv_total_cells=self._kv_total,
            prefix_cache_hits=c.prefix_cache_hits,
            prefix_cache_tokens=c.prefix_cache_tokens,
            prompt_tokens=c.prompt_tokens,
            generated_tokens=c.generated_tokens,
            by_adapters=by_adapters if self._loras else None,
        )


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def check_grammar(grammar: str) -> None:
    """``InvalidRequest`` for a grammar xgrammar cannot parse, at submit (before vLLM sees it)."""
    import xgrammar

    try:
        xgrammar.Grammar.from_ebnf(grammar)
    except RuntimeError as exc:
        message = str(exc).split("error at", 1)[-1].strip()
        raise InvalidRequest(f"the grammar does not parse: error at {message}", param="grammar") from exc


def _first_line(exc: BaseException) -> str:
    """The line of a vLLM error a person needs: pydantic's "1 validation error for VllmConfig" is followed by
    the line that says what was wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    if "validation error" in lines[0] and len(lines) > 1:
        return f"{lines[0]}: {lines[1]}"
    return lines[0]
