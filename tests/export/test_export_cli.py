"""`kaiyuan export` on a store adapter model built on a tiny random llama GGUF: the adapter file, the merged model
(same logits as base + adapter in llama.cpp, lineage and license metadata, the base's template), the release bundle,
the license check, and atomicity when the export is interrupted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from kaiyuan.cli._app import cli
from kaiyuan.config import load_settings
from kaiyuan.errors import LicenseDenied
from kaiyuan.export import BaseShape, PeftAdapter, write_lora_gguf
from kaiyuan.store import ModelStore

_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _random_adapter(base: Path, dest: Path, rank: int = 4) -> Path:
    """A PEFT-shaped random LoRA for every linear layer of ``base``, written as a GGUF LoRA."""
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    for t in gguf.GGUFReader(str(base)).tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in _HF:
            n_in, n_out = int(t.shape[0]), int(t.shape[1])
            module = f"base_model.model.model.layers.{parts[1]}.{_HF[parts[2]]}"
            tensors[f"{module}.lora_A.weight"] = rng.normal(0, 0.3, (rank, n_in)).astype(np.float32)
            tensors[f"{module}.lora_B.weight"] = rng.normal(0, 0.3, (n_out, rank)).astype(np.float32)
    write_lora_gguf(PeftAdapter(tensors, alpha=8.0, rank=rank), BaseShape.from_gguf(base), dest)
    return dest


@pytest.fixture
def adapter_model(
    kaiyuan_home: Path, tmp_path: Path, tiny_gguf_factory: Callable[..., Path]
) -> dict[str, Any]:
    base = tiny_gguf_factory(
        arch="llama",
        chat_template="{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        license={
            "id": "apache-2.0",
            "name": "Apache 2.0",
            "link": "https://www.apache.org/licenses/LICENSE-2.0",
        },
    )
    store = ModelStore(kaiyuan_home)
    store.import_gguf(base, "tinybase")
    adapter = _random_adapter(base, tmp_path / "adapter.gguf")
    store.add_adapter_model(
        "tiny-ad", "tinybase", adapter, lineage={"base_models": [{"name": "tinybase:latest"}]},
        license={"inherited": True, "source": "inherited"},
    )  # fmt: skip
    return {"base": base, "adapter": adapter, "out": tmp_path / "out"}


def _logits(model: Path, adapter: Path | None = None) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), lora_path=str(adapter) if adapter else None, logits_all=True, n_ctx=128,
                          n_threads=1, verbose=False)  # fmt: skip
    try:
        tokens = llm.tokenize(
            b"The quick brown fox jumps over the lazy dog, twice and then once more.", add_bos=False
        )
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def test_gguf_lora_export_is_the_loadable_adapter(adapter_model: dict[str, Any]) -> None:
    out = adapter_model["out"] / "a.gguf"
    result = CliRunner().invoke(cli, ["export", "tiny-ad", "--format", "gguf-lora", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == adapter_model["adapter"].read_bytes()
    adapted, plain = _logits(adapter_model["base"], out), _logits(adapter_model["base"])
    assert np.abs(adapted - plain).max() > 0.1  # llama.cpp applied it


def test_merge_matches_base_plus_adapter_and_bundles(adapter_model: dict[str, Any]) -> None:
    bundle = adapter_model["out"] / "release"
    result = CliRunner().invoke(
        cli, ["export", "tiny-ad", "--merge", "--quant", "F32", "--bundle", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in bundle.iterdir())
    assert files == ["LICENSE", "NOTICE", "README.md", "bom.cdx.json", "tiny-ad.F32.gguf"]
    merged = bundle / "tiny-ad.F32.gguf"
    reference = _logits(adapter_model["base"], adapter_model["adapter"])
    ours = _logits(merged)
    assert (reference.argmax(-1) == ours.argmax(-1)).mean() >= 0.9  # random weights: near-ties may flip
    assert np.abs(reference - ours).max() < 1e-2
    fields = gguf.GGUFReader(str(merged)).fields
    assert fields["general.name"].contents() == "tiny-ad:latest"
    assert fields["general.base_model.0.name"].contents() == "tinybase:latest"
    assert fields["general.license"].contents() == "apache-2.0"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    bom = json.loads((bundle / "bom.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert "Apache" in (bundle / "LICENSE").read_text()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]


LICENSE_TEXT = "TINY COMMUNITY LICENSE\n\n1. You may use the tiny model for anything, keeping this notice.\n"


def test_bundle_license_includes_the_texts_the_store_holds(adapter_model: dict[str, Any]) -> None:
    """A model pulled from a registry keeps its license layer's text in the store; the release bundle of a model
    derived from it carries that text verbatim (docs/licenses.md promises it)."""
    import dataclasses

    store = ModelStore.from_settings(load_settings())
    base = store.resolve("tinybase")
    store.write_manifest(dataclasses.replace(base, license={**base.license, "text": LICENSE_TEXT}))
    bundle = adapter_model["out"] / "release"
    result = CliRunner().invoke(cli, ["export", "tiny-ad", "--format", "gguf-lora", "--bundle", str(bundle)])
    assert result.exit_code == 0, result.output
    license_file = (bundle / "LICENSE").read_text()
    assert "Full text: apache-2.0" in license_file and LICENSE_TEXT.strip() in license_file
    assert license_file.index("Apache") < license_file.index(LICENSE_TEXT.strip())  # the summary comes first


def test_interrupted_export_leaves_nothing(
    adapter_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kaiyuan.export._export as export_module

    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "quantize", interrupted)
    out_dir: Path = adapter_model["out"]
    out_dir.mkdir(parents=True)
    result = CliRunner().invoke(
        cli, ["export", "tiny-ad", "--merge", "--quant", "Q8_0", "-o", str(out_dir / "m.gguf")]
    )
    assert result.exit_code != 0  # click turns the Ctrl-C into Abort
    assert list(out_dir.iterdir()) == []
    result = CliRunner().invoke(
        cli, ["export", "tiny-ad", "--merge", "--quant", "Q8_0", "--bundle", str(out_dir / "b")]
    )
    assert result.exit_code != 0  # click turns the Ctrl-C into Abort
    assert list(out_dir.iterdir()) == []


def test_policy_can_forbid_export(adapter_model: dict[str, Any], kaiyuan_home: Path) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["apache-2.0"]\n', encoding="utf-8")
    out = adapter_model["out"] / "a.gguf"
    result = CliRunner().invoke(cli, ["export", "tiny-ad", "-o", str(out)])
    assert isinstance(result.exception, LicenseDenied)
    assert not out.exists()
