"""ModelReplica: the Ray Serve deployment that holds kaiyuan's model runtime, one engine per model file.

Each replica is a Ray actor with its own engines (the llama.cpp engine, or whichever engine
``kaiyuan.model_loader.default_engine_factory`` starts for the model), hence its own sequence slots and prefix
cache. It receives ``ReplicaCall``s — token ids already rendered and tokenized by the front — and streams back
batches of ``TokenEvent`` ending with one ``StreamEnd``. It loads the models named at deploy time before it
reports ready, and any other model on its first call; beyond ``max_loaded`` the least recently used idle engine
closes. Model files come from the store in the replica's ``KAIYUAN_HOME`` (a shared path on a multi-node
cluster), or are copied, sha256-verified, from the head's store (``_model_files``). With ``flash_attn = auto``
every replica runs a model file with the same flash-attention setting, measured by the first to load it
(``_flash_choices``), so an answer does not depend on the replica.

Ray reads three methods: ``check_health`` (every engine answers), ``record_routing_stats`` (the figures the
router and the front's ``/metrics`` see) and ``__del__`` (close the engines). The front calls ``generate``,
``embed`` and ``unload`` (when it stops serving a model file, sent to each replica in turn). Must not know HTTP,
templates or routing policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from kaiyuan.cluster._calls import ReplicaCall, StreamEnd, UnloadCall
from kaiyuan.cluster._flash_choices import flash_choices
from kaiyuan.cluster._model_files import BLOB_SOURCE_NAMESPACE, ensure_model_files
from kaiyuan.config import Settings
from kaiyuan.engine import Engine, EngineStats, GenerationRequest, TokenEvent
from kaiyuan.errors import KaiyuanError
from kaiyuan.model_loader import default_engine_factory
from kaiyuan.store import Manifest, ModelStore

__all__ = ["ModelReplica"]

log = logging.getLogger(__name__)

_END = object()


@dataclass
class _Loaded:
    engine: Engine
    name: str
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)


class ModelReplica:
    """One replica of the model runtime (deployed with ``serve.deployment``; see ``_app.py``)."""

    def __init__(self, settings: Settings, models: list[str]) -> None:
        self._settings = settings
        self._store = ModelStore.from_settings(settings)
        self._engines: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        for name in models:
            manifest = self._store.resolve(name)
            bare = _bare(manifest)
            self._load(bare.blob.digest, bare)

    # -- engines -----------------------------------------------------------------------------------
    def _load(self, key: str, manifest: Manifest) -> _Loaded:
        with self._load_lock:
            with self._lock:
                found = self._engines.get(key)
            if found is not None:
                return found
            local = ensure_model_files(manifest, self._settings)
            engine = self._start_engine(key, local)
            loaded = _Loaded(engine, manifest.full_name)
            with self._lock:
                self._engines[key] = loaded
            log.info("replica %d loaded %s", os.getpid(), manifest.full_name)
            self._evict_beyond_limit()
            return loaded

    def _start_engine(self, key: str, local: Manifest) -> Engine:
        """The model's engine; with ``flash_attn = auto``, on the deployment's one choice for this model file
        (``_flash_choices``): measured here if this replica is the first to load it."""
        if self._settings.flash_attn != "auto":
            return default_engine_factory(local, self._settings)
        choices = flash_choices(BLOB_SOURCE_NAMESPACE)
        # what the measurement depends on besides the file (the actor may outlive a deployment on a joined cluster)
        choice_key = f"{key} threads={self._settings.threads} parallel={self._settings.parallel}"
        chosen = ray.get(choices.claim.remote(choice_key))
        if chosen is not None:
            return default_engine_factory(local, replace(self._settings, flash_attn=chosen))
        try:
            engine = default_engine_factory(local, self._settings)
        except BaseException:
            choices.release.remote(choice_key)
            raise
        # the llama.cpp engine's measurement; none on a GPU or another engine, where "auto" means no measuring
        # (and where the probe failed, the others measure for themselves)
        probe = getattr(engine, "flash_probe", None)
        choices.record.remote(choice_key, "auto" if probe is None else "on" if probe.enabled else "off")
        return engine

    def _evict_beyond_limit(self) -> None:
        with self._lock:
            idle = sorted(
                (item for item in self._engines.items() if item[1].in_flight == 0),
                key=lambda item: item[1].last_used,
            )
            victims: list[tuple[str, _Loaded]] = []
            while len(self._engines) - len(victims) > self._settings.max_loaded and idle:
                victims.append(idle.pop(0))
            for key, _ in victims:
                del self._engines[key]
        for _, loaded in victims:
            loaded.engine.close()

    async def _engine_for(self, call: ReplicaCall) -> _Loaded:
        """The loaded engine for ``call``, marked in use (``_release`` it): an engine in use is never evicted."""
        while True:
            with self._lock:
                loaded = self._engines.get(call.model)
                if loaded is not None:
                    loaded.in_flight += 1
                    loaded.last_used = time.monotonic()
                    return loaded
            await asyncio.to_thread(self._load, call.model, call.manifest)

    def _release(self, loaded: _Loaded) -> None:
        with self._lock:
            loaded.in_flight -= 1
            loaded.last_used = time.monotonic()

    # -- calls -------------------------------------------------------------------------------------
    async def ready(self) -> int:
        """This replica's process id, once its models are loaded (the front waits on it)."""
        return os.getpid()

    async def generate(self, call: ReplicaCall) -> AsyncIterator[list[Any]]:
        """Run one generation; yields lists of ``TokenEvent`` (as many as were ready), then ``[StreamEnd]``."""
        try:
            loaded = await self._engine_for(call)
        except KaiyuanError as exc:
            yield [StreamEnd.failed(exc)]
            return
        try:
            handle = loaded.engine.submit(call.request)
        except KaiyuanError as exc:
            self._release(loaded)
            yield [StreamEnd.failed(exc)]
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in handle:
                    queue.put_nowait(event)
            except Exception as exc:  # the engine's error ends the stream; the front re-raises it
                queue.put_nowait(exc)
            queue.put_nowait(_END)

        task = asyncio.ensure_future(pump())
        try:
            while True:
                batch: list[TokenEvent | StreamEnd] = []
                item = await queue.get()
                while True:
                    if item is _END:
                        batch.append(StreamEnd(handle.finish_reason or "stop", handle.cached_tokens))
                        yield batch
                        return
                    if isinstance(item, BaseException):
                        batch.append(StreamEnd.failed(item, handle.finish_reason or "stop"))
                        yield batch
                        return
                    batch.append(item)
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                yield batch
        finally:
            handle.cancel()  # a cancelled or cut stream frees its slot; a finished one ignores this
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self._release(loaded)

    async def unload(self, call: UnloadCall) -> bool:
        """Close the engine of ``call.model`` if this replica holds it idle (the front serves no model of that
        file any more); one still generating is left to the ``max_loaded`` limit. True when it closed."""
        with self._lock:
            loaded = self._engines.get(call.model)
            if loaded is None or loaded.in_flight:
                return False
            del self._engines[call.model]
        await asyncio.to_thread(loaded.engine.close)
        log.info("replica %d unloaded %s", os.getpid(), loaded.name)
        return True

    async def embed(self, model: str, manifest: Manifest, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts`` with the model's engine."""
        loaded = await self._engine_for(ReplicaCall(model, manifest, GenerationRequest(prompt=[])))
        try:
            return await asyncio.to_thread(loaded.engine.embed, texts)
        finally:
            self._release(loaded)

    # -- what Ray reads ----------------------------------------------------------------------------
    def check_health(self) -> None:
        """Raise when an engine no longer answers (Ray then replaces this replica)."""
        with self._lock:
            engines = list(self._engines.values())
        for loaded in engines:
            loaded.engine.stats()

    def record_routing_stats(self) -> dict[str, Any]:
        """This replica's figures: pid, totals over its engines, and each model's own."""
        with self._lock:
            engines = list(self._engines.items())
        total = EngineStats()
        models: dict[str, dict[str, int]] = {}
        for key, loaded in engines:
            s = loaded.engine.stats()
            models[key] = {"running": s.running, "waiting": s.waiting}
            for name in _SUMMED:
                setattr(total, name, getattr(total, name) + getattr(s, name))
        figures: dict[str, Any] = {name: getattr(total, name) for name in _SUMMED}
        figures.update(pid=os.getpid(), models=models)
        return figures

    def __del__(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for loaded in engines:
            with contextlib.suppress(Exception):
                loaded.engine.close()


_SUMMED = (
    "running",
    "waiting",
    "slots",
    "kv_used_cells",
    "kv_total_cells",
    "prefix_cache_hits",
    "prefix_cache_tokens",
    "prompt_tokens",
    "generated_tokens",
)


def _bare(manifest: Manifest) -> Manifest:
    """The manifest without its adapters: one engine per model file (adapters ride on each request)."""
    return replace(manifest, adapters=[])
