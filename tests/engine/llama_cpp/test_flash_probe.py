"""``flash_attn="auto"`` on the CPU: both settings are measured at load and the faster one is used; ``on`` and
``off`` are never second-guessed; the measurement is made once per model and setting in a process."""

from __future__ import annotations

import pytest

from kaiyuan.engine import GenerationRequest
from kaiyuan.engine.llama_cpp import LlamaCppEngine
from kaiyuan.engine.llama_cpp._flash_probe import MAX_SEQS, FlashProbe, probe_flash_attn
from kaiyuan.engine.llama_cpp._model import Model
from kaiyuan.types import SamplingParams

from ..conftest import THREADS


def test_probe_measures_both_settings_at_a_common_depth(model_path: str) -> None:
    model = Model(model_path)
    try:
        probe = probe_flash_attn(model, n_threads=THREADS, n_parallel=3, budget_s=0.5)
        assert probe.off_ms > 0 and probe.on_ms > 0
        assert probe.seqs == 3 and probe.depth >= 32
        assert probe.enabled == (probe.on_ms <= probe.off_ms)
        assert probe.spread >= 1.0
        assert probe_flash_attn(model, n_threads=THREADS, n_parallel=3) is probe  # measured once
        wide = probe_flash_attn(model, n_threads=THREADS, n_parallel=64, budget_s=0.5)
        assert wide.seqs == MAX_SEQS  # more slots than the probe decodes at once are not needed to choose
    finally:
        model.close()


def test_the_choice_follows_the_faster_median() -> None:
    assert FlashProbe(off_ms=10.0, on_ms=9.0, depth=384, seqs=8).enabled
    assert not FlashProbe(off_ms=9.0, on_ms=10.0, depth=384, seqs=8).enabled
    slower = FlashProbe(off_ms=9.0, on_ms=10.0, depth=384, seqs=8)
    assert "flash attention off" in slower.describe() and "10.0 ms on" in slower.describe()
    assert not slower.busy and "busy" not in slower.describe()


def test_steps_that_varied_wildly_say_the_choice_is_a_guess() -> None:
    busy = FlashProbe(off_ms=1968.8, on_ms=410.1, depth=32, seqs=8, spread=6.3)  # measured beside a test run
    assert busy.busy
    assert "cores were busy" in busy.describe() and "--flash-attn on|off" in busy.describe()


def test_auto_engine_generates_and_says_what_it_chose(model_path: str) -> None:
    with LlamaCppEngine(model_path, n_ctx=256, n_parallel=2, n_threads=THREADS) as engine:
        assert engine.flash_probe is not None
        assert engine.flash_probe.describe() in engine.description
        prompt = engine.tokenize("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
        events = list(
            engine.submit(
                GenerationRequest(prompt=prompt, sampling=SamplingParams(temperature=0), max_tokens=4)
            )
        )
        assert len(events) >= 1


@pytest.mark.parametrize("setting", ["on", "off"])
def test_explicit_settings_are_not_measured(model_path: str, setting: str) -> None:
    with LlamaCppEngine(model_path, flash_attn=setting, n_ctx=64, n_parallel=1, n_threads=THREADS) as engine:
        assert engine.flash_probe is None and "flash attention" not in engine.description
