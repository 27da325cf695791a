"""ReplicaEngine: the ``Engine`` protocol in the front process, served by the model replicas on Ray Serve.

The chat layer, both API skins and the license guard run in the front unchanged: they tokenize with this engine,
``submit`` a ``GenerationRequest`` and read a ``GenerationHandle``. Tokenizing happens here, on the model's own
vocabulary loaded without weights (``_vocabulary``: llama.cpp's for a GGUF, the folder's tokenizer for a Hugging
Face model), so the prompt reaches the router as token ids. ``submit`` checks the request as every engine does (context fit, vocabulary), refuses
with ``Overloaded`` beyond ``max_in_flight``, and sends a ``ReplicaCall`` through the deployment handle
(``options(stream=True)``); a pump on the cluster's event loop thread feeds the events into the handle.

Failures: a replica that dies before the first token is retried on another (up to ``RETRIES`` times: nothing was
streamed, so nothing repeats); one that dies mid-stream ends the stream with an ``EngineError`` that says so —
never a hang. Cancelling the handle cancels the call on the replica, which frees its slot. ``close`` (the front
serves no model of this file any more: ``keep_alive: 0``, ``/api/delete``, its own ``--max-loaded``) sends an
``UnloadCall`` to each live replica, so their engines free the memory as one server's would.

Must not know HTTP, templates or routing policy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from kaiyuan.cluster._calls import ReplicaCall, StreamEnd, UnloadCall
from kaiyuan.cluster._vocabulary import load_vocabulary
from kaiyuan.engine import EngineStats, GenerationHandle, GenerationRequest
from kaiyuan.engine._admission import check_request
from kaiyuan.errors import EngineError, Overloaded
from kaiyuan.store import Manifest

if TYPE_CHECKING:
    from kaiyuan.cluster._router import ReplicaView

__all__ = ["RETRIES", "EventLoopThread", "ReplicaEngine"]

log = logging.getLogger(__name__)

RETRIES = 2
_RETRY_PAUSE_S = 0.5
UNLOAD_TIMEOUT_S = 30.0  # per replica: one that died meanwhile is never routed to, the call is given up


class EventLoopThread:
    """One asyncio loop in a daemon thread: where the front talks to Ray Serve, whichever thread asks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kaiyuan-cluster", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the loop. Raises ``RuntimeError`` once ``close`` has begun (the coroutine is closed)."""
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("the cluster's event loop is closed")
            return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """Cancel what still runs on the loop and let it unwind (a task left pending when the loop stops is
        destroyed half-way, with a warning), then stop the loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self.loop).result(timeout=5)
            except (concurrent.futures.TimeoutError, RuntimeError):
                log.debug("tasks on the cluster's event loop did not unwind in 5 s")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def _cancel_other_tasks() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ReplicaEngine:
    """An ``Engine`` whose generations run on the replicas behind ``handle``."""

    def __init__(
        self,
        handle: Any,
        manifest: Manifest,
        *,
        n_ctx: int,
        max_in_flight: int,
        loop: EventLoopThread,
        replicas: Callable[[], list[ReplicaView]],
    ) -> None:
        self._handle = handle
        self._manifest = manifest
        self._key = manifest.blob.digest
        self._loop = loop
        self._replicas = replicas  # the live replicas and the figures each last reported
        self._max_in_flight = max_in_flight
        self._in_flight = 0  # submitted and not finished
        self._streaming = 0  # of those, the ones a replica has streamed a token for: decoding for sure
        self._lock = threading.Lock()
        self._vocab = load_vocabulary(manifest.model_path)
        self.model_path = str(manifest.model_path)
        self.n_ctx = n_ctx
        self.n_vocab = self._vocab.n_vocab

    # -- vocabulary (local) ------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return list(self._vocab.tokenize(text, add_special=add_special, parse_special=parse_special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._vocab.detokenize(tokens))

    def token_text(self, token: int) -> str:
        return str(self._vocab.token_text(token))

    def is_eog(self, token: int) -> bool:
        return bool(self._vocab.is_eog(token))

    # -- generation (remote) -----------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        check_request(request, self.n_ctx, self.n_vocab)
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                raise Overloaded(
                    f"{self._in_flight} requests are in flight on the replicas, the most this server queues; "
                    "retry shortly or add replicas (--replicas / --max-replicas)",
                    retry_after=2,
                )
            self._in_flight += 1
        call = ReplicaCall(self._key, self._manifest, request)
        future: concurrent.futures.Future[Any] | None = None

        def cancel(_: GenerationHandle) -> None:
            if future is not None:
                future.cancel()

        handle = GenerationHandle(len(request.prompt), on_cancel=cancel)
        try:
            future = self._loop.submit(self._pump(call, handle))
        except RuntimeError:
            self._done()
            raise EngineError("the server is shutting down; send the request to another one") from None
        future.add_done_callback(lambda _: self._done())
        return handle

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    async def _pump(self, call: ReplicaCall, handle: GenerationHandle) -> None:
        """Stream ``call`` from a replica into ``handle``; retry elsewhere if the replica dies before a token."""
        from ray.exceptions import RayError

        attempt = 0
        streamed = False
        try:
            while True:
                stream = self._handle.options(stream=True).generate.remote(call)
                try:
                    async for batch in stream:
                        for item in batch:
                            if isinstance(item, StreamEnd):
                                handle.cached_tokens = item.cached_tokens
                                handle.finish(item.finish_reason, item.error())
                                return
                            if not streamed:
                                streamed = True
                                self._count_streaming(+1)
                            handle.push(item)
                    raise EngineError("the replica ended the stream without saying why")
                except asyncio.CancelledError:
                    stream.cancel()
                    handle.finish("cancelled")
                    raise
                except RayError as exc:
                    if not streamed and attempt < RETRIES:
                        attempt += 1
                        await asyncio.sleep(_RETRY_PAUSE_S)
                        continue
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    handle.finish(
                        "stop",
                        EngineError(
                            f"the replica serving this request stopped ({type(exc).__name__}: {reason[:200]}); "
                            "the answer is cut short, send the request again"
                        ),
                    )
                    return
                except EngineError as exc:
                    handle.finish("stop", exc)
                    return
        finally:
            if streamed:
                self._count_streaming(-1)

    def _count_streaming(self, step: int) -> None:
        with self._lock:
            self._streaming += step

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings from a replica (called from a worker thread, as the routes do)."""
        result: list[list[float]] = self._handle.embed.remote(self._key, self._manifest, list(texts)).result()
        return result

    def stats(self) -> EngineStats:
        """This model's running/waiting from the requests in flight here, and the replicas' totals for the rest.

        The replicas report their figures once a second, so their running/waiting lag what a client just did (a
        stream it reads, a stream it dropped) by a second or two; a single server's do not. What this front has
        in flight is exact at once: those a replica streams tokens for are decoding, and of the rest as many as
        the replicas last reported queued are waiting, the others prefilling (running)."""
        total = EngineStats()
        reported_waiting = 0
        for figures in (view.stats for view in self._replicas()):
            own = figures.get("models", {}).get(self._key, {})
            reported_waiting += int(own.get("waiting", 0))
            for name in (
                "slots",
                "kv_used_cells",
                "kv_total_cells",
                "prefix_cache_hits",
                "prefix_cache_tokens",
            ):
                setattr(total, name, getattr(total, name) + int(figures.get(name, 0)))
            total.prompt_tokens += int(figures.get("prompt_tokens", 0))
            total.generated_tokens += int(figures.get("generated_tokens", 0))
        with self._lock:
            in_flight, streaming = self._in_flight, self._streaming
        total.waiting = min(reported_waiting, in_flight - streaming)
        total.running = in_flight - total.waiting
        return total

    def close(self) -> None:
        self._vocab.close()
        # RuntimeError: the cluster's loop has stopped, and the replicas are gone with it
        with contextlib.suppress(RuntimeError):
            self._loop.submit(self._unload_everywhere([view.replica_id for view in self._replicas()]))

    async def _unload_everywhere(self, replicas: list[str]) -> None:
        for replica in replicas:
            response = None
            try:
                response = self._handle.unload.remote(UnloadCall(self._key, replica))
                await asyncio.wait_for(response, UNLOAD_TIMEOUT_S)
            except Exception as exc:  # a replica gone or stopping: its memory goes with it
                if response is not None:
                    response.cancel()
                log.debug("unload of %s on replica %s: %s", self.model_path, replica, exc)
