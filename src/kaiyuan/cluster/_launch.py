"""``ServeCluster``: what ``kaiyuan serve --replicas N`` starts and stops around its HTTP server.

In order: join the Ray cluster at ``ray_address``, or start a local one bound to 127.0.0.1 (no dashboard, CPUs
enough for the replicas); start Ray Serve with no HTTP proxy of its own (the front is this process); start the
``BlobSource`` on this node (replicas elsewhere copy model files from it); deploy the replicas and wait until
they answer; build the front runtime over their handle. ``gate``/``server`` give the drain-aware ASGI app and
uvicorn server; ``close`` deletes the application (a joined cluster keeps running) or shuts the local cluster
down. Entry points that construct it need the ``if __name__ == "__main__"`` guard (Ray starts processes).

Must not know routes or engines.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import ray
import uvicorn
from ray import serve
from ray._private import ray_constants

from kaiyuan.cluster._app import APP_NAME, front_runtime, replica_bounds, replica_deployment
from kaiyuan.cluster._drain import DrainGate, DrainingServer
from kaiyuan.cluster._flash_choices import end_flash_choices
from kaiyuan.cluster._front_engine import EventLoopThread
from kaiyuan.cluster._model_files import BLOB_SOURCE_NAME, BLOB_SOURCE_NAMESPACE, BlobSource
from kaiyuan.config import Settings, default_threads
from kaiyuan.errors import ConfigError, EngineError
from kaiyuan.store import Manifest

__all__ = ["ServeCluster"]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0
SHUTDOWN_TIMEOUT_S = 30.0


class ServeCluster:
    """Ray, Serve and the model replicas for one ``kaiyuan serve`` front."""

    def __init__(self, settings: Settings, models: Sequence[str]) -> None:
        self.settings = settings
        self.joined = settings.ray_address is not None
        self._closed = False
        self._gate: DrainGate | None = None
        self._start_ray()
        self.loop = EventLoopThread()
        try:
            serve.start(proxy_location="Disabled")
            self._source = self._start_blob_source()
            app = replica_deployment(settings).bind(settings, list(models))
            self.handle = serve.run(app, name=APP_NAME, route_prefix=None)
            pids = self.loop.submit(self._ready()).result(timeout=READY_TIMEOUT_S)
            log.info("replicas ready (pids %s)", pids)
            self.runtime = front_runtime(settings, self.handle, self.loop, on_model=self._offer)
        except BaseException:
            self.close()
            raise

    def _start_ray(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        verbose = self.settings.log_level.upper() in ("DEBUG", "INFO")
        if self.joined:
            try:
                ray.init(
                    address=self.settings.ray_address, log_to_driver=verbose, logging_level=logging.WARNING
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"cannot join the Ray cluster at {self.settings.ray_address}: {exc}; check --ray-address "
                    "(the head's GCS address, host:port) or leave it out to start a local cluster"
                ) from exc
            return
        _, _, high = replica_bounds(self.settings)
        cpus = max(default_threads(), math.ceil(high * self.settings.threads))
        # Loopback only. Ray turns a node IP of 127.0.0.1 into the machine's routable address unless it runs as a
        # single-machine cluster (its macOS/Windows mode); in that mode its servers bind 127.0.0.1.
        os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # for the processes Ray starts
        ray_constants.ENABLE_RAY_CLUSTER = False  # for this one, which read it at import
        for attempt in range(2):  # a raylet that starts too slowly on a busy machine: one more try
            try:
                ray.init(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=verbose,
                    logging_level=logging.WARNING,
                )
                return
            except Exception as exc:  # Ray raises a bare Exception when its node does not come up
                ray.shutdown()
                if attempt == 1:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise EngineError(
                        f"could not start a local Ray cluster ({first}); retry when the machine is less busy, "
                        "or join a running cluster with --ray-address"
                    ) from exc
                log.warning("the local Ray cluster did not start (%s); trying once more", exc)

    def _start_blob_source(self) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        return (
            ray.remote(BlobSource)
            .options(
                name=BLOB_SOURCE_NAME,
                namespace=BLOB_SOURCE_NAMESPACE,
                get_if_exists=True,
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote()
        )

    def _offer(self, manifest: Manifest) -> None:
        if not manifest.is_folder:  # Hugging Face folders are read from a shared path, not copied
            self._source.register.remote(manifest.blob.digest, str(manifest.model_path))

    async def _ready(self) -> list[int]:
        """Wait for a replica to answer; the call also starts this process's router for the deployment."""
        initial, _, _ = replica_bounds(self.settings)
        pids = await asyncio.gather(*(self.handle.ready.remote() for _ in range(initial)))
        return sorted(set(pids))

    def describe(self) -> str:
        """One line for the console: how many replicas, where, routed how."""
        initial, low, high = replica_bounds(self.settings)
        count = f"{initial}" if low == high else f"{initial} (autoscaling {low}..{high})"
        where = (
            f"Ray cluster {self.settings.ray_address}" if self.joined else "a local Ray cluster (127.0.0.1)"
        )
        return f"{count} on {where}, prefix-affinity routing; SIGTERM drains"

    def gate(self, app: Any) -> DrainGate:
        """``app`` behind the drain gate (503 + Retry-After once SIGTERM arrived)."""
        self._gate = DrainGate(app)
        return self._gate

    def server(self, config: uvicorn.Config) -> uvicorn.Server:
        """uvicorn's server that drains on SIGTERM (the app must come from ``gate``)."""
        if self._gate is None:
            raise EngineError("ServeCluster.server needs the app from ServeCluster.gate")
        return DrainingServer(config, self._gate, self.settings.drain_timeout)

    def close(self) -> None:
        """Remove the application (joined cluster) or stop the local cluster; idempotent. Waits at most
        ``SHUTDOWN_TIMEOUT_S`` for Serve (a cluster that lost its raylet never answers), then lets Ray go."""
        if self._closed or not ray.is_initialized():
            return
        self._closed = True
        stopper = threading.Thread(target=self._stop_serve, name="kaiyuan-serve-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=SHUTDOWN_TIMEOUT_S)
        if stopper.is_alive():
            log.warning("Ray Serve did not stop within %g s; leaving it", SHUTDOWN_TIMEOUT_S)
        self.loop.close()
        ray.shutdown()

    def _stop_serve(self) -> None:
        try:
            if self.joined:
                serve.delete(APP_NAME)
                end_flash_choices(BLOB_SOURCE_NAMESPACE)
            else:
                serve.shutdown()
        except Exception:  # the cluster may already be gone; shutting down must not fail on it
            log.warning("stopping the Serve application failed", exc_info=True)
