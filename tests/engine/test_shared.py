"""SharedEngines / EngineShare: several models over one engine, each with its own LoRA set, closed with the last."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kaiyuan.engine import Engine, EngineShare, EngineStats, GenerationRequest, SharedEngines
from kaiyuan.testing import FakeEngine


class Starter:
    """Counts engine starts; each start is slow enough that racing acquirers would overlap."""

    def __init__(self) -> None:
        self.engines: list[FakeEngine] = []

    def __call__(self) -> FakeEngine:
        time.sleep(0.05)
        engine = FakeEngine(["ok"], n_ctx=64)
        self.engines.append(engine)
        return engine


def test_one_engine_per_key_closed_with_its_last_share(tmp_path: Path) -> None:
    shared, start = SharedEngines(), Starter()
    base = shared.acquire("base.gguf", start)
    tuned = shared.acquire("base.gguf", start, adapters=[str(tmp_path / "lora.gguf")])
    other = shared.acquire("other.gguf", start)
    assert isinstance(base, Engine) and isinstance(tuned, EngineShare)
    assert len(start.engines) == 2 and base.engine is tuned.engine and shared.running() == 2

    base.close()
    base.close()  # idempotent: one share never releases twice
    assert list(tuned.submit(GenerationRequest(prompt=[1])))  # the engine still runs for the adapter model
    tuned.close()
    assert shared.running() == 1
    with pytest.raises(Exception, match="closed"):
        start.engines[0].submit(GenerationRequest(prompt=[1]))

    again = shared.acquire("base.gguf", start)  # a later load starts a fresh engine
    assert len(start.engines) == 3 and again.engine is start.engines[2]
    again.close()
    other.close()
    assert shared.running() == 0


def test_concurrent_loads_of_one_file_start_one_engine() -> None:
    shared, start = SharedEngines(), Starter()
    shares: list[EngineShare] = []
    threads = [
        threading.Thread(target=lambda: shares.append(shared.acquire("m.gguf", start))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(start.engines) == 1 and {id(s.engine) for s in shares} == {id(start.engines[0])}
    for share in shares:
        share.close()
    assert shared.running() == 0


def test_each_share_stamps_its_adapters_unless_the_request_names_its_own(tmp_path: Path) -> None:
    shared, start = SharedEngines(), Starter()
    lora = str(tmp_path / "lora.gguf")
    base = shared.acquire("m.gguf", start)
    tuned = shared.acquire("m.gguf", start, adapters=[lora])
    for share in (base, tuned):
        list(share.submit(GenerationRequest(prompt=share.tokenize("hi"))))
    list(tuned.submit(GenerationRequest(prompt=[1], adapters=())))
    assert [r.adapters for r in start.engines[0].requests] == [(), (lora,), ()]
    assert tuned.detokenize(tuned.tokenize("héllo")) == "héllo" and tuned.n_ctx == 64
    base.close()
    tuned.close()


class CountingEngine(FakeEngine):
    def __init__(self, by_adapters: dict[tuple[str, ...], tuple[int, int]] | None) -> None:
        super().__init__(["ok"], n_ctx=64)
        self.by_adapters = by_adapters

    def stats(self) -> EngineStats:
        return replace(super().stats(), running=5, waiting=2, slots=8, by_adapters=self.by_adapters)


def test_stats_count_the_share_own_requests(tmp_path: Path) -> None:
    lora = tmp_path / "lora.gguf"
    counts = {(): (1, 0), (str(lora.resolve()),): (4, 2)}
    shared = SharedEngines()
    base = shared.acquire("m.gguf", lambda: CountingEngine(counts))
    tuned = shared.acquire("m.gguf", lambda: CountingEngine(counts), adapters=[str(lora)])
    assert (base.stats().running, base.stats().waiting, base.stats().slots) == (1, 0, 8)
    assert (tuned.stats().running, tuned.stats().waiting, tuned.stats().slots) == (4, 2, 8)
    idle = shared.acquire("m.gguf", lambda: CountingEngine(counts), adapters=[str(tmp_path / "idle.gguf")])
    assert (idle.stats().running, idle.stats().waiting) == (0, 0)
    for share in (base, tuned, idle):
        share.close()
    # an engine that does not tell adapter sets apart reports its totals
    plain = SharedEngines().acquire("m.gguf", lambda: CountingEngine(None))
    assert plain.stats().running == 5
    plain.close()
