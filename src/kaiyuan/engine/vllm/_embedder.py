"""Sentence embeddings for a model served by the vLLM engine: a second, pooling vLLM engine on the same folder.

A vLLM engine runs one model runner, "generate" or "pooling", never both (``ModelConfig.runner``: "Each vLLM
instance only supports one model runner"). So ``VllmEngine.embed`` starts, on its first call, a second ``AsyncLLM``
on the same Hugging Face folder with ``runner="pooling"`` and ``convert="embed"`` (vLLM's adapter that turns a
``*ForCausalLM`` into an embedding model), as a vLLM user would run ``vllm serve --runner pooling`` beside the
generating server. Pooling as on the llama.cpp engine: the model's own (a sentence-transformers folder's
``modules.json``, which vLLM reads), else the mean of the last hidden states; vectors L2-normalised.

It only prefills, so its KV cache is sized for one full context (not ``--kv-cache-gib``) and it has no prefix
cache. It owns its own event-loop thread, so its load (tens of seconds on a CPU) never stalls the streams of the
generating engine. Knows nothing of HTTP or model names.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kaiyuan.engine.vllm._cpu_env import env_without, start_lock
from kaiyuan.errors import ContextOverflow, EngineError, InvalidRequest

__all__ = ["Pooler", "embed_inputs", "kv_bytes_for"]

log = logging.getLogger(__name__)

_ids = itertools.count()
_MAX_SEQS = 16  # texts prefilled together
_FALLBACK_KV_BYTES = 256 << 20  # when config.json does not say enough to size the cache


def embed_inputs(texts: Sequence[str], tokenize: Callable[[str], list[int]], n_ctx: int) -> list[list[int]]:
    """Token ids of each text, or ``InvalidRequest`` / ``ContextOverflow`` naming the input that cannot be
    embedded (the same checks, and words, as the llama.cpp engine's)."""
    token_lists = [tokenize(text) for text in texts]
    for i, tokens in enumerate(token_lists):
        if not tokens:
            raise InvalidRequest(f"input {i} is empty: nothing to embed", param="input")
        if len(tokens) > n_ctx:
            raise ContextOverflow(
                f"input {i} has {len(tokens)} tokens but embeddings take at most {n_ctx}; shorten it",
                prompt_tokens=len(tokens),
                context_length=n_ctx,
                param="input",
            )
    return token_lists


def kv_bytes_for(folder: Path, n_ctx: int) -> int:
    """KV-cache bytes for one sequence of ``n_ctx`` tokens (plus a block), at 4 bytes an element (an upper bound
    for every dtype vLLM may choose), from ``config.json``."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = config.get("text_config", config)
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        layers = int(config["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return _FALLBACK_KV_BYTES
    return 2 * layers * kv_heads * head_dim * 4 * (n_ctx + 64)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


class Pooler:
    """The pooling engine of one model folder; ``start()`` loads it (slow), ``embed()`` runs texts through it."""

    def __init__(self, folder: str, *, n_ctx: int, dtype: str, tensor_parallel_size: int) -> None:
        self.folder = folder
        self.n_ctx = n_ctx
        self._dtype = dtype
        self._tp = tensor_parallel_size
        self._llm: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kaiyuan-vllm-pooling", daemon=True
        )
        self._thread.start()

    def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        folder = Path(self.folder)
        kv_bytes = kv_bytes_for(folder, self.n_ctx)
        settings: dict[str, Any] = dict(
            model=self.folder,
            tokenizer=self.folder,
            runner="pooling",
            convert="embed",
            dtype=self._dtype,
            max_model_len=self.n_ctx,
            max_num_seqs=_MAX_SEQS,
            # mean pooling needs every token's hidden state: nothing may come from a cache
            enable_prefix_caching=False,
            enforce_eager=True,
            tensor_parallel_size=self._tp,
            kv_cache_memory_bytes=kv_bytes,
            gpu_memory_utilization=_gpu_share(folder, kv_bytes),
            disable_log_stats=True,
        )
        if not (folder / "modules.json").is_file():  # no sentence-transformers pooling of its own
            settings["pooler_config"] = {"pooling_type": "MEAN"}
        # vLLM's CPU platform lets VLLM_CPU_KVCACHE_SPACE (set for the generating engine) override
        # kv_cache_memory_bytes; this engine needs only one context's worth.
        with start_lock, env_without("VLLM_CPU_KVCACHE_SPACE"):
            try:
                self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**settings))
            except Exception as exc:
                raise EngineError(
                    f"vLLM could not start the embedding engine for {self.folder} (a second copy of the "
                    f"weights, {_weights_bytes(folder) / 2**30:.1f} GiB, with its own small KV cache): "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; free "
                    "memory (on a GPU, a lower --gpu-memory-utilization) or serve a GGUF of the model on "
                    "llama.cpp for embeddings"
                ) from exc
        log.info("vLLM embedding engine for %s started", self.folder)

    def embed(self, token_lists: Sequence[list[int]]) -> list[list[float]]:
        """One L2-normalised vector per token list, in order (vLLM batches them)."""
        future = asyncio.run_coroutine_threadsafe(self._embed(token_lists), self._loop)
        return future.result()

    async def _embed(self, token_lists: Sequence[list[int]]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._one(tokens) for tokens in token_lists)))

    async def _one(self, tokens: list[int]) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        last = None
        prompt = TokensPrompt(prompt_token_ids=tokens)
        async for output in self._llm.encode(
            prompt, PoolingParams(task="embed"), f"kaiyuan-embed-{next(_ids)}"
        ):
            last = output
        if last is None:
            raise EngineError("vLLM returned no embedding for this input")
        return [float(x) for x in last.outputs.data.float().tolist()]

    def close(self) -> None:
        try:
            if self._llm is not None:
                self._llm.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _gpu_share(folder: Path, kv_bytes: int) -> float:
    """On a GPU, vLLM refuses to start unless the free memory covers ``gpu_memory_utilization`` of the card; the
    generating engine holds most of it, so ask for the weights, the KV cache and some room for activations only."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return 0.9  # unused: kv_cache_memory_bytes decides on CPU
    import torch

    _free, total = torch.cuda.mem_get_info()
    need = _weights_bytes(folder) * 1.2 + kv_bytes + (1 << 30)
    return float(min(0.9, max(need / total, 0.01)))
