"""Which engine serves a model (``choose_engine``): GGUF on llama.cpp, Hugging Face folders on vLLM, and clear
errors for a pairing that cannot run. No engine is started here."""

from __future__ import annotations

from pathlib import Path

import pytest

import kaiyuan.engine
from kaiyuan.config import load_settings
from kaiyuan.errors import ConfigError, MissingExtra
from kaiyuan.model_loader import choose_engine
from kaiyuan.store import ModelStore


@pytest.fixture
def store(kaiyuan_home: Path) -> ModelStore:
    return ModelStore.from_settings(load_settings())


def hf_manifest(store: ModelStore, tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "tiny-hf"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1,'
        ' "num_attention_heads": 2, "vocab_size": 16}'
    )
    (folder / "tokenizer.json").write_text(
        '{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}'
    )
    (folder / "tokenizer_config.json").write_text("{}")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((16, 8), np.float32)}, str(folder / "model.safetensors"))
    return store.import_hf_folder(folder, "tiny-hf:latest")


def test_auto_serves_gguf_on_llama_cpp(store: ModelStore) -> None:
    assert choose_engine(store.resolve("smollm2"), load_settings()) == "llama.cpp"


def test_vllm_for_a_gguf_names_convert(store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="convert smollm2:135m --to hf"):
        choose_engine(store.resolve("smollm2"), load_settings(engine="vllm"))


def test_hf_folder_runs_on_vllm_and_llama_cpp_names_convert(store: ModelStore, tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    manifest = hf_manifest(store, tmp_path)
    with pytest.raises(ConfigError, match="--to gguf"):
        choose_engine(manifest, load_settings(engine="llama.cpp"))
    if kaiyuan.engine.vllm_available():
        assert choose_engine(manifest, load_settings()) == "vllm"


def test_vllm_missing_names_the_extra(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("safetensors")
    manifest = hf_manifest(store, tmp_path)
    # a machine without vLLM: the import probe answers "not installed"
    monkeypatch.setattr(kaiyuan.engine, "vllm_available", lambda: False)
    with pytest.raises(MissingExtra, match=r"pip install 'kaiyuan\[vllm"):
        choose_engine(manifest, load_settings())
