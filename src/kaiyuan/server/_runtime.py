"""Runtime: everything a server app needs, built once and injected into ``create_app``.

Owns the bundle of settings, model store (for listings), ``ModelManager`` (for loaded models) and metrics, and
the production constructor ``Runtime.from_settings``. Tests build a ``Runtime`` by hand with a manager whose
loader returns ``kaiyuan.testing.FakeEngine``-backed models. Must not know routes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from kaiyuan.config import Settings
from kaiyuan.model_loader import EngineFactory, default_engine_factory, make_loader
from kaiyuan.server._metrics import Metrics
from kaiyuan.server._models import ModelManager
from kaiyuan.store import ModelStore

__all__ = ["Runtime", "get_runtime"]


@dataclass
class Runtime:
    """Settings, store, loaded models and metrics of one server.

    ``store`` answers ``list()`` (manifests with ``to_model_info()``) for ``/v1/models``; ``models`` loads and
    holds engines.
    """

    settings: Settings
    models: ModelManager
    store: ModelStore
    started: float = field(default_factory=time.time)
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.models)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, engine_factory: EngineFactory = default_engine_factory
    ) -> Runtime:
        """The production runtime: the store in ``settings.home``, models loaded with ``engine_factory``."""
        store = ModelStore.from_settings(settings)
        manager = ModelManager(
            loader=make_loader(settings, store, engine_factory),
            resolve=lambda name: store.resolve(name).full_name,
            max_loaded=settings.max_loaded,
        )
        return cls(settings=settings, models=manager, store=store)

    def close(self) -> None:
        self.models.close()


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (FastAPI dependency)."""
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime
