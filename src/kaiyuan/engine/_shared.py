"""One started engine shared by several models: a base model and the adapter models made on it.

An adapter model is its base's weights plus a small LoRA file. Starting an engine per adapter model would hold the
base's KV cache, compute buffers and threads once per model, and two engines on the same cores fight for them.
Instead every model over one model file gets an ``EngineShare`` of the same engine: the share stamps its own LoRA
set on each request (``GenerationRequest.adapters``) and the llama.cpp scheduler decodes the adapter sets in turn,
so base and adapter requests run concurrently, each with its own behaviour. docs/engine.md has the measurements.

Owns the reference count (the engine closes with its last share) and what a share reports as its own (running
and waiting requests of its adapter set). Knows nothing of the store or of model names: callers give a key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import Engine, EngineStats, GenerationRequest

__all__ = ["EngineShare", "SharedEngines", "describe_engine"]


def describe_engine(engine: Engine) -> str:
    """What an engine runs on ("llama.cpp (CPU, 4 threads)", "vLLM 0.32.0 (cuda)"), for people to read."""
    return str(getattr(engine, "description", type(engine).__name__))


@dataclass
class _Entry:
    lock: threading.Lock
    engine: Engine | None = None
    users: int = 0


class SharedEngines:
    """Started engines by key (e.g. the model file), each closed when the last of its shares closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def acquire(self, key: str, start: Callable[[], Engine], adapters: Sequence[str] = ()) -> EngineShare:
        """A share of the engine for ``key`` that applies ``adapters`` to its requests; ``start()`` makes the
        engine if none is running. Loads of one key happen once; loads of different keys do not wait on it."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(threading.Lock()))
        with entry.lock:
            if entry.engine is None:
                entry.engine = start()
            entry.users += 1
            engine = entry.engine
        return EngineShare(engine, adapters, release=lambda: self._release(entry))

    def running(self) -> int:
        """Engines started now."""
        with self._lock:
            entries = list(self._entries.values())
        return sum(1 for entry in entries if entry.engine is not None)

    def _release(self, entry: _Entry) -> None:
        with entry.lock:
            entry.users -= 1
            if entry.users > 0 or entry.engine is None:
                return
            engine, entry.engine = entry.engine, None
            engine.close()


class EngineShare:
    """An ``Engine`` that is one model's view of a shared engine: its requests carry its LoRA adapters (unless a
    request names its own), its ``stats()`` count its own requests, and ``close()`` releases it."""

    def __init__(self, engine: Engine, adapters: Sequence[str], release: Callable[[], None]) -> None:
        self.engine = engine
        self.model_path = engine.model_path
        self.n_ctx = engine.n_ctx
        self.n_vocab = engine.n_vocab
        self.adapters = tuple(os.fspath(p) for p in adapters)
        self._key = tuple(os.path.realpath(p) for p in self.adapters)
        self._release: Callable[[], None] | None = release
        self._release_lock = threading.Lock()

    @property
    def description(self) -> str:
        return describe_engine(self.engine)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.engine.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.engine.detokenize(tokens)

    def token_text(self, token: int) -> str:
        return self.engine.token_text(token)

    def is_eog(self, token: int) -> bool:
        return self.engine.is_eog(token)

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        if request.adapters is None:
            request = replace(request, adapters=self.adapters)
        return self.engine.submit(request)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.engine.embed(texts)

    def stats(self) -> EngineStats:
        """The engine's counters, with ``running``/``waiting`` narrowed to this share's adapter set (the slots,
        KV cache and token totals are the shared engine's)."""
        stats = self.engine.stats()
        if stats.by_adapters is None:
            return stats
        running, waiting = stats.by_adapters.get(self._key, (0, 0))
        return replace(stats, running=running, waiting=waiting)

    def close(self) -> None:
        """Release this share (idempotent); the engine closes when no share holds it."""
        with self._release_lock:
            release, self._release = self._release, None
        if release is not None:
            release()
