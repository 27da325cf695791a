"""Prometheus metrics of the server (``/metrics``), all named ``kaiyuan_*``.

Owns one ``CollectorRegistry`` per app (tests build many apps) with:

- request-level series measured here: ``kaiyuan_requests_total{endpoint,status}``,
  ``kaiyuan_prompt_tokens_total{model}``, ``kaiyuan_generation_tokens_total{model}``, and the histograms
  ``kaiyuan_time_to_first_token_seconds``, ``kaiyuan_inter_token_latency_seconds``,
  ``kaiyuan_request_duration_seconds`` (end to end, request received → last token), each by ``model``;
- engine state read at scrape time from every loaded model's ``EngineStats``: ``kaiyuan_requests_running``
  (sequences decoding), ``kaiyuan_requests_waiting`` (queued for a slot), ``kaiyuan_slots``,
  ``kaiyuan_kv_cache_used_cells``, ``kaiyuan_kv_cache_usage_ratio``, ``kaiyuan_prefix_cache_hits_total``,
  ``kaiyuan_prefix_cache_tokens_total``, ``kaiyuan_models_loaded``.

Must not know routes or wire formats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kaiyuan.types import Usage

if TYPE_CHECKING:
    from kaiyuan.server._models import ModelManager

__all__ = ["CONTENT_TYPE", "Metrics", "RequestTimer"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class _EngineCollector(Collector):
    """Reads every loaded model's engine stats when Prometheus scrapes."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("kaiyuan_requests_running", "Sequences decoding now", labels=["model"])
        waiting = GaugeMetricFamily(
            "kaiyuan_requests_waiting", "Requests queued for a sequence slot", labels=["model"]
        )
        slots = GaugeMetricFamily("kaiyuan_slots", "Sequence slots of the loaded model", labels=["model"])
        kv_used = GaugeMetricFamily("kaiyuan_kv_cache_used_cells", "KV cache cells in use", labels=["model"])
        kv_ratio = GaugeMetricFamily("kaiyuan_kv_cache_usage_ratio", "KV cache use, 0..1", labels=["model"])
        hits = CounterMetricFamily(
            "kaiyuan_prefix_cache_hits", "Requests that reused a cached prompt prefix", labels=["model"]
        )
        hit_tokens = CounterMetricFamily(
            "kaiyuan_prefix_cache_tokens", "Prompt tokens served from the prefix cache", labels=["model"]
        )
        entries = self._manager.loaded()
        for entry in entries:
            s = entry.stats()
            labels = [entry.name]
            running.add_metric(labels, s.running)
            waiting.add_metric(labels, s.waiting)
            slots.add_metric(labels, s.slots)
            kv_used.add_metric(labels, s.kv_used_cells)
            kv_ratio.add_metric(labels, s.kv_used_cells / s.kv_total_cells if s.kv_total_cells else 0.0)
            hits.add_metric(labels, s.prefix_cache_hits)
            hit_tokens.add_metric(labels, s.prefix_cache_tokens)
        loaded = GaugeMetricFamily("kaiyuan_models_loaded", "Models held in memory", value=len(entries))
        yield from (running, waiting, slots, kv_used, kv_ratio, hits, hit_tokens, loaded)


class Metrics:
    """The metric families of one app; ``render()`` is the /metrics body."""

    def __init__(self, manager: ModelManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kaiyuan_requests", "API requests answered", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "kaiyuan_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "kaiyuan_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.ttft = Histogram(
            "kaiyuan_time_to_first_token_seconds",
            "Time from request received to first generated token",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kaiyuan_inter_token_latency_seconds",
            "Time between consecutive tokens of one sequence",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "kaiyuan_request_duration_seconds",
            "End-to-end time of a generation request",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        r.register(_EngineCollector(manager))

    def count_request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def timer(self, model: str) -> RequestTimer:
        return RequestTimer(self, model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """Times one generation request: a ``GenerationObserver`` for the chat layer plus ``finish(usage)``."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self.start = time.perf_counter()
        self._first: float | None = None
        self._last: dict[int, float] = {}
        self._finished = False

    def on_token(self, index: int) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = now
            self._metrics.ttft.labels(self._model).observe(now - self.start)
        previous = self._last.get(index)
        if previous is not None:
            self._metrics.itl.labels(self._model).observe(now - previous)
        self._last[index] = now

    def finish(self, usage: Usage | None) -> None:
        """Record the end of the request (once); ``usage`` None when it failed before generating."""
        if self._finished:
            return
        self._finished = True
        self._metrics.e2e.labels(self._model).observe(time.perf_counter() - self.start)
        if usage is not None:
            self._metrics.prompt_tokens.labels(self._model).inc(usage.prompt_tokens)
            self._metrics.generation_tokens.labels(self._model).inc(usage.completion_tokens)
