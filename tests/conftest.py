"""Shared fixtures: every test gets its own KAIYUAN_HOME and an environment without KAIYUAN_* variables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tiny-GGUF factory (tiny_gguf_factory) and the HF-format SmolLM2 (smollm2_hf_dir) are available to every test.
pytest_plugins = ["tests.fixtures.tiny_gguf", "tests.fixtures.hf_model"]

# Tests use one llama.cpp thread: with 2 shared cores, 2 threads stall badly when anything else runs.
os.environ.setdefault("KAIYUAN_TEST_THREADS", "1")


def _reference_llamas_without_extra_buffer_types() -> None:
    """Reference ``llama_cpp.Llama`` objects the tests build load weights the way kaiyuan's engine does.

    llama-cpp-python 0.3.36 built natively on a CPU with AMX segfaults in ggml_backend_amx_mul_mat at the first
    decode when weights go to the AMX buffer type. kaiyuan's ``Model`` turns extra buffer types off on such CPUs
    (engine/llama_cpp/_model.py); the high-level ``Llama`` class has no such argument, so its default model
    parameters are made the same for the test process (and stay llama.cpp's elsewhere, as kaiyuan's do).
    """
    try:
        from llama_cpp import llama_cpp as lib

        from kaiyuan.engine.llama_cpp._model import cpu_has_amx
    except ImportError:  # pragma: no cover - the core install has it
        return
    defaults = lib.llama_model_default_params
    use_extra_bufts = not cpu_has_amx()

    def without_extra_bufts():  # type: ignore[no-untyped-def]
        params = defaults()
        params.use_extra_bufts = use_extra_bufts
        return params

    lib.llama_model_default_params = without_extra_bufts


_reference_llamas_without_extra_buffer_types()


@pytest.fixture(autouse=True)
def kaiyuan_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty KAIYUAN_HOME per test, and no leftover KAIYUAN_* settings from the caller's shell."""
    for name in list(os.environ):
        if name.startswith("KAIYUAN_") and name != "KAIYUAN_TEST_THREADS":
            monkeypatch.delenv(name, raising=False)
    for name in ("HF_TOKEN", "HF_ENDPOINT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "kaiyuan-home"
    home.mkdir()
    monkeypatch.setenv("KAIYUAN_HOME", str(home))
    monkeypatch.setenv("KAIYUAN_THREADS", "1")
    # Fixed, not measured at load: tests compare greedy tokens with reference runs (flash attention off), and
    # the load-time probe is tested on its own (tests/engine/llama_cpp/test_flash_probe.py).
    monkeypatch.setenv("KAIYUAN_FLASH_ATTN", "off")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield home


# Modules that start a Ray cluster, or a vLLM engine, run one at a time on one pytest-xdist worker: two local Ray
# clusters would contend for the same ports, and two vLLM engines on 2 cores for everything. Every other module
# stays whole on one worker too (its module-scoped server or engine is started once).
_EXCLUSIVE_GROUPS = {
    "tests/cluster/": "ray",
    "tests/engine/vllm/": "vllm",
    "tests/server/test_openai_sdk_vllm.py": "vllm",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = next((g for prefix, g in _EXCLUSIVE_GROUPS.items() if module.startswith(prefix)), module)
        item.add_marker(pytest.mark.xdist_group(group))
