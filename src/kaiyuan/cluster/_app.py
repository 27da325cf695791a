"""The Ray Serve application: kaiyuan's model replicas, and the HTTP front that talks to them.

- ``replica_deployment(settings)``: ``ModelReplica`` with kaiyuan's options — replica count or autoscaling bounds
  (``min_replicas``/``max_replicas``, scaled on requests in flight per replica, target ``parallel``), one replica
  reserving ``threads`` CPUs, ``max_ongoing_requests`` = slots + queue, health checks, graceful shutdown within
  ``drain_timeout``, and the ``PrefixAffinityRouter`` (or plain round robin with ``routing = round_robin``) with
  per-second replica figures.
- ``front_runtime(settings, handle, …)``: the server ``Runtime`` whose models run on the replicas
  (``ReplicaEngine``), with the cluster's series added to its ``/metrics``.
- ``build_app(args)``: the application builder a Serve config file names (``kaiyuan serve --print-config``):
  replicas plus the HTTP surface as a Serve ingress deployment (``KaiyuanIngress``), for ``serve deploy`` /
  ``serve run`` / KubeRay. ``kaiyuan serve --replicas N`` deploys the replicas only and runs the same front in
  its own process (docs/decisions.md says why).

Must not know routes (it calls ``create_app``) or engines (the replica does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Application, Deployment

from kaiyuan.cluster._front_engine import EventLoopThread, ReplicaEngine
from kaiyuan.cluster._metrics import ClusterCollector
from kaiyuan.cluster._registry import routers
from kaiyuan.cluster._replica import ModelReplica
from kaiyuan.cluster._router import PrefixAffinityRouter, ReplicaView
from kaiyuan.config import Settings, load_settings
from kaiyuan.errors import ConfigError
from kaiyuan.store import Manifest

__all__ = [
    "APP_NAME",
    "REPLICA_DEPLOYMENT",
    "KaiyuanIngress",
    "build_app",
    "front_runtime",
    "replica_bounds",
    "replica_deployment",
    "settings_args",
]

APP_NAME = "kaiyuan"
REPLICA_DEPLOYMENT = "ModelReplica"
ROUTING_STATS_PERIOD_S = 1.0


def replica_bounds(settings: Settings) -> tuple[int, int, int]:
    """``(initial, min, max)`` replicas from the settings, checked."""
    initial = settings.replicas or settings.min_replicas or 1
    low = settings.min_replicas if settings.min_replicas is not None else initial
    high = settings.max_replicas if settings.max_replicas is not None else max(initial, low)
    if not low <= initial <= high:
        raise ConfigError(
            f"replicas must satisfy min_replicas <= replicas <= max_replicas, got {low} <= {initial} <= {high}; "
            "fix --replicas / --min-replicas / --max-replicas"
        )
    return initial, low, high


def replica_options(settings: Settings) -> dict[str, Any]:
    """The ``serve.deployment`` options of ``ModelReplica`` (also written into Serve config files)."""
    initial, low, high = replica_bounds(settings)
    options: dict[str, Any] = {
        "name": REPLICA_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": settings.threads},
        "max_ongoing_requests": settings.parallel + settings.max_queue,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": float(settings.drain_timeout),
        "request_router_config": {
            "request_router_class": "kaiyuan.cluster._router:PrefixAffinityRouter",
            "request_routing_stats_period_s": ROUTING_STATS_PERIOD_S,
            "request_routing_stats_timeout_s": 10.0,
            "request_router_kwargs": {"policy": settings.routing, "slots": settings.parallel},
        },
    }
    if low == high:
        options["num_replicas"] = initial
    else:
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": initial,
            "target_ongoing_requests": settings.parallel,
            "upscale_delay_s": float(settings.scale_up_delay),
            "downscale_delay_s": float(settings.scale_down_delay),
        }
    return options


def replica_deployment(settings: Settings) -> Deployment:
    options = replica_options(settings)
    router = options.pop("request_router_config")
    router["request_router_class"] = PrefixAffinityRouter
    deployment: Any = serve.deployment(
        ModelReplica, request_router_config=RequestRouterConfig(**router), **options
    )
    assert isinstance(deployment, Deployment)
    return deployment


def front_runtime(
    settings: Settings,
    handle: Any,
    loop: EventLoopThread,
    *,
    app_name: str = APP_NAME,
    on_model: Callable[[Manifest], None] | None = None,
) -> Any:
    """The server ``Runtime`` of the front: models load as ``ReplicaEngine``s over ``handle``; ``on_model`` is
    told each model file the front starts serving (the launcher offers it to replicas on other nodes)."""
    from kaiyuan.server import Runtime

    _, _, high = replica_bounds(settings)

    def replicas() -> list[ReplicaView]:
        return [view for router in routers(app_name) for view in router.replica_views()]

    def engine_factory(manifest: Manifest, settings: Settings) -> ReplicaEngine:
        if on_model is not None:
            on_model(manifest)
        return ReplicaEngine(
            handle,
            manifest,
            n_ctx=settings.ctx,
            max_in_flight=high * (settings.parallel + settings.max_queue),
            loop=loop,
            replicas=replicas,
        )

    runtime = Runtime.from_settings(settings, engine_factory=engine_factory)
    runtime.metrics.registry.register(ClusterCollector(app_name))
    return runtime


def settings_args(settings: Settings) -> dict[str, Any]:
    """The settings as plain values for a Serve config file's ``args`` (secrets left out: set them on the
    cluster as ``KAIYUAN_API_KEY`` / ``KAIYUAN_HF_TOKEN`` in the runtime environment)."""
    from kaiyuan.config import _FIELD_TYPES

    values = {name: getattr(settings, name) for name in _FIELD_TYPES if name not in ("api_key", "hf_token")}
    values = {name: value for name, value in values.items() if value is not None}
    values["home"] = str(settings.home)
    return values


@serve.ingress()
class KaiyuanIngress:
    """The HTTP surface (``create_app``) as a Serve ingress deployment over the replicas' handle."""

    def __init__(self, replicas: Any, settings: Settings, models: list[str]) -> None:
        # The replicas load the models' engines before they report ready; the front loads a model's vocabulary on
        # its first request (milliseconds), as ModelManager does for any model. (Serve runs this constructor
        # inside its event loop, where ModelManager.load_now's asyncio.run cannot.)
        self._loop = EventLoopThread()
        self._runtime = front_runtime(settings, replicas, self._loop)

    def __serve_build_asgi_app__(self) -> Any:
        from kaiyuan.server import create_app

        return create_app(self._runtime)


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder (``import_path: kaiyuan.cluster:build_app``): ``args`` has ``models`` (names to
    load on every replica) and ``settings`` (kaiyuan settings, as in kaiyuan.toml)."""
    values = dict(args.get("settings", {}))
    home = values.pop("home", None)
    settings = load_settings(home=Path(home) if home else None, **values)
    models = list(args.get("models", ["smollm2"]))
    replicas = replica_deployment(settings).bind(settings, models)
    ingress: Any = serve.deployment(KaiyuanIngress, name="KaiyuanIngress", ray_actor_options={"num_cpus": 0})
    application: Application = ingress.bind(replicas, settings, models)
    return application
