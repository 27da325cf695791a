"""ModelManager: which models the server holds in memory, loading on first use and unloading the least recently
used beyond ``max_loaded`` engines (models that share an engine — a base and its adapter models — count once).

Owns the loaded set, a lease count per model (a model serving a request is never closed under it; an eviction
waits for its last lease), per-model load locks (concurrent first requests load once) and running the blocking
load/close calls in a worker thread so the event loop never stalls. What "loading" means is injected
(``loader``: canonical name → ``ChatModel``) and so is name resolution (``resolve``: any name or alias →
canonical name, raising ``ModelNotFound``); the production pair comes from ``kaiyuan.model_loader``, tests pass fakes.
Must not know HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.chat import ChatModel
from kaiyuan.engine import EngineShare, EngineStats, describe_engine
from kaiyuan.errors import ConfigError, EngineError, KaiyuanError

__all__ = ["LoadedModel", "ModelLease", "ModelManager"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model held in memory, with when it was loaded and last used (unix seconds) and its open leases."""

    name: str
    model: ChatModel
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    leases: int = 0
    evicting: bool = False

    def stats(self) -> EngineStats:
        return self.model.engine.stats()


class ModelLease:
    """The right to use one loaded model for one request; ``release()`` once (idempotent) when done."""

    def __init__(self, manager: ModelManager, entry: LoadedModel) -> None:
        self._manager = manager
        self._entry = entry
        self._released = False

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def model(self) -> ChatModel:
        return self._entry.model

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self._entry)


def _weights_of(entry: LoadedModel) -> int:
    """Identity of the engine that holds the model's weights (shared by a base and its adapter models)."""
    engine = entry.model.engine
    return id(engine.engine if isinstance(engine, EngineShare) else engine)


class ModelManager:
    """Loads models on first use, keeps at most ``max_loaded`` engines, unloads the least recently used beyond."""

    def __init__(
        self,
        *,
        loader: Callable[[str], ChatModel],
        resolve: Callable[[str], str],
        max_loaded: int = 1,
    ) -> None:
        if max_loaded < 1:
            raise ConfigError(f"max_loaded must be at least 1, got {max_loaded}")
        self._loader = loader
        self._resolve = resolve
        self.max_loaded = max_loaded
        self._loaded: dict[str, LoadedModel] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._mutex = threading.Lock()  # guards _loaded and the lease counts (released from any thread)

    def resolve(self, name: str) -> str:
        """The canonical ``name:tag`` for ``name`` (raises ``ModelNotFound`` with suggestions)."""
        return self._resolve(name)

    def loaded(self) -> list[LoadedModel]:
        """The models in memory now, most recently used first."""
        with self._mutex:
            return sorted(self._loaded.values(), key=lambda e: e.last_used, reverse=True)

    def is_loaded(self, name: str) -> bool:
        with self._mutex:
            return name in self._loaded

    async def acquire(self, name: str) -> ModelLease:
        """A lease on model ``name`` (any alias), loading it first if needed."""
        canonical = await asyncio.to_thread(self._resolve, name)
        entry = self._take(canonical)
        if entry is None:
            lock = self._load_locks.setdefault(canonical, asyncio.Lock())
            async with lock:
                entry = self._take(canonical)
                if entry is None:
                    log.info("loading model %s", canonical)
                    model = await asyncio.to_thread(self._load, canonical)
                    entry = LoadedModel(canonical, model, leases=1)
                    with self._mutex:
                        self._loaded[canonical] = entry
                    await self._evict_beyond_limit()
        return ModelLease(self, entry)

    async def preload(self, name: str) -> str:
        """Load ``name`` now; returns its canonical name."""
        lease = await self.acquire(name)
        lease.release()
        return lease.name

    def load_now(self, name: str) -> str:
        """Load ``name`` from plain code before the server's event loop runs (``kaiyuan serve MODEL``); returns
        its canonical name. Models beyond ``max_loaded`` are unloaded as usual."""
        canonical = self._resolve(name)
        if self._take(canonical) is None:
            entry = LoadedModel(canonical, self._load(canonical), leases=1)
            with self._mutex:
                self._loaded[canonical] = entry
        asyncio.run(self._evict_beyond_limit())
        self._release(self._loaded[canonical])
        return canonical

    def _load(self, canonical: str) -> ChatModel:
        """Run the loader; what it raises outside kaiyuan's error tree (a bug, or a backend failing in a way
        nobody wrapped) becomes an ``EngineError`` that names the model, what failed and what to do, instead of
        the anonymous "internal error". Nothing of a failed load is kept: other models serve on, and the next
        request for this one tries again."""
        try:
            return self._loader(canonical)
        except KaiyuanError:
            raise
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            what = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            raise EngineError(
                f"could not load model {canonical} ({what}); the models already loaded keep serving. Check the "
                f"model with `kaiyuan show {canonical}` (re-import or re-pull it if it is damaged); if it looks "
                "right, this is a kaiyuan bug: report it with the server log's traceback"
            ) from exc

    def _take(self, canonical: str) -> LoadedModel | None:
        with self._mutex:
            entry = self._loaded.get(canonical)
            if entry is None or entry.evicting:
                return None
            entry.leases += 1
            entry.last_used = time.time()
            return entry

    def _release(self, entry: LoadedModel) -> None:
        close = False
        with self._mutex:
            entry.leases -= 1
            entry.last_used = time.time()
            if entry.evicting and entry.leases == 0:
                close = True
        if close:
            self._close(entry)

    async def _evict_beyond_limit(self) -> None:
        """Mark the least recently used models beyond ``max_loaded`` for unloading; idle ones close now."""
        to_close: list[LoadedModel] = []
        with self._mutex:
            groups: dict[int, list[LoadedModel]] = {}
            for entry in self._loaded.values():
                if not entry.evicting:
                    groups.setdefault(_weights_of(entry), []).append(entry)
            # a base model and its adapter models share one engine: they count (and unload) as one
            by_age = sorted(groups.values(), key=lambda group: max(e.last_used for e in group))
            while len(by_age) > self.max_loaded:
                for victim in by_age.pop(0):
                    victim.evicting = True
                    del self._loaded[victim.name]
                    log.info(
                        "unloading %s (least recently used; --max-loaded %d)", victim.name, self.max_loaded
                    )
                    if victim.leases == 0:
                        to_close.append(victim)
        for entry in to_close:
            await asyncio.to_thread(self._close, entry)

    async def unload(self, name: str) -> bool:
        """Unload model ``name`` (canonical ``name:tag``) now, or when its last lease ends; False when it was not
        loaded. (Ollama's ``keep_alive``.)"""
        with self._mutex:
            entry = self._loaded.pop(name, None)
            if entry is None:
                return False
            entry.evicting = True
            idle = entry.leases == 0
        log.info("unloading %s", name)
        if idle:
            await asyncio.to_thread(self._close, entry)
        return True

    def _close(self, entry: LoadedModel) -> None:
        try:
            entry.model.engine.close()
        except Exception:  # closing must not take the server down; the model is gone either way
            log.exception("closing model %s failed", entry.name)

    def close(self) -> None:
        """Unload everything (server shutdown)."""
        with self._mutex:
            entries = list(self._loaded.values())
            self._loaded.clear()
        for entry in entries:
            self._close(entry)

    def describe(self) -> list[dict[str, Any]]:
        """The loaded models as plain data (``kaiyuan ps``, ``/kaiyuan/ps``)."""
        out = []
        for entry in self.loaded():
            stats = entry.stats()
            engine = entry.model.engine
            out.append(
                {
                    "name": entry.name,
                    "model_path": engine.model_path,
                    "engine": describe_engine(engine),
                    "context_length": engine.n_ctx,
                    "loaded_at": entry.loaded_at,
                    "last_used": entry.last_used,
                    "active_requests": entry.leases,
                    "running": stats.running,
                    "waiting": stats.waiting,
                    "slots": stats.slots,
                    "kv_used_cells": stats.kv_used_cells,
                    "kv_total_cells": stats.kv_total_cells,
                    "size": entry.model.info.size if entry.model.info is not None else 0,
                }
            )
        return out
