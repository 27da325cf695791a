"""Fixtures for pull tests: the hub stand-in, settings pointing every hub at it, a tiny GGUF to serve."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kaiyuan.config import Settings, load_settings
from kaiyuan.store import ModelStore
from tests.fixtures.tiny_gguf import template_text
from tests.store.pull.hub_standin import HubStandIn


@pytest.fixture(scope="session")
def tiny_bytes(tiny_gguf_factory: Callable[..., Path]) -> bytes:
    """A tiny llama GGUF (Apache-2.0 in its metadata, ChatML template) as bytes."""
    path = tiny_gguf_factory(
        license={"id": "apache-2.0"}, chat_template=template_text("Qwen-Qwen2.5-7B-Instruct"), name="Tiny"
    )
    return path.read_bytes()


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        yield server


@pytest.fixture
def configure(
    hub: HubStandIn, kaiyuan_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """``configure(policy=..., hf_token=...)`` → settings with every hub at the stand-in (also in the environment,
    for CLI runs) and an optional ``[policy]`` table written to kaiyuan.toml."""

    def make(policy: str | None = None, hf_token: str | None = None) -> Settings:
        for name in ("KAIYUAN_HF_ENDPOINT", "KAIYUAN_MODELSCOPE_ENDPOINT", "KAIYUAN_OLLAMA_REGISTRY"):
            monkeypatch.setenv(name, hub.url)
        if hf_token:
            monkeypatch.setenv("HF_TOKEN", hf_token)
        if policy is not None:
            (kaiyuan_home / "kaiyuan.toml").write_text(f"[policy]\n{policy}\n", encoding="utf-8")
        return load_settings()

    return make


def store_of(settings: Settings) -> ModelStore:
    return ModelStore.from_settings(settings)
