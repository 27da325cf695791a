"""llama.cpp compute outside the scheduler (embeddings, the flash-attention probe) runs on a thread that ends with
it: on OpenMP builds a long-lived thread that once ran compute keeps an OpenMP team, and with two such teams
libgomp stops spinning at barriers (decoding measured 2.5x slower; see engine/llama_cpp/_compute_thread.py)."""

from __future__ import annotations

import threading

import pytest

from kaiyuan.engine.llama_cpp import LlamaCppEngine, _embedder, _engine
from kaiyuan.engine.llama_cpp._compute_thread import in_fresh_thread

from ..conftest import THREADS


def test_work_runs_on_a_thread_that_is_gone_afterwards() -> None:
    seen: list[threading.Thread] = []
    assert in_fresh_thread(lambda: seen.append(threading.current_thread()) or 42) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()
    with pytest.raises(ValueError, match="bad"):
        in_fresh_thread(lambda: (_ for _ in ()).throw(ValueError("bad")))


def test_embeddings_and_the_probe_compute_off_the_callers_thread(
    model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[threading.Thread]] = {"probe": [], "embed": []}
    real_probe, real_run = _engine.probe_flash_attn, _embedder.Embedder._run

    def probe(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads["probe"].append(threading.current_thread())
        return real_probe(*args, **kwargs)

    def run(self, group):  # type: ignore[no-untyped-def]
        threads["embed"].append(threading.current_thread())
        return real_run(self, group)

    monkeypatch.setattr(_engine, "probe_flash_attn", probe)
    monkeypatch.setattr(_embedder.Embedder, "_run", run)
    with LlamaCppEngine(model_path, flash_attn="auto", n_ctx=128, n_parallel=1, n_threads=THREADS) as engine:
        vectors = engine.embed(["hello", "world"])
    assert len(vectors) == 2
    for kind in ("probe", "embed"):
        assert threads[kind], kind
        for thread in threads[kind]:
            assert thread is not threading.current_thread() and not thread.is_alive(), kind


def test_an_idle_scheduler_thread_ends_and_the_next_request_starts_one(
    model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an idle engine's thread would keep its OpenMP team and slow another loaded model's decoding
    from kaiyuan.engine import GenerationRequest
    from kaiyuan.engine.llama_cpp import _scheduler

    monkeypatch.setattr(_scheduler, "IDLE_EXIT_S", 0.2)
    with LlamaCppEngine(model_path, flash_attn="off", n_ctx=128, n_parallel=2, n_threads=THREADS) as engine:
        prompt = engine.tokenize("Hello")
        assert len(list(engine.submit(GenerationRequest(prompt=prompt, max_tokens=3)))) == 3
        first = engine.scheduler._thread
        assert first is not None
        first.join(timeout=30)
        assert not first.is_alive() and engine.scheduler._thread is None
        assert len(list(engine.submit(GenerationRequest(prompt=prompt, max_tokens=3)))) == 3
        assert engine.scheduler._thread is not None and engine.scheduler._thread is not first
