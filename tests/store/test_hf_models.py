"""Hugging Face-format models in the store: a folder imported file by file, laid out again as a folder, and treated
like a GGUF model by copy, remove, garbage collection, the license guard and the chat template reader.

The folders here are small hand-made ones (config, tokenizer, a real safetensors file of a few tensors, card):
the store never runs a model, it checks, hashes and lays out files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from kaiyuan.errors import InvalidModelFile, LicenseDenied, StoreError
from kaiyuan.store import ModelStore, folder_special_tokens, read_chat_template

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file written by hand (its format is a JSON header, then raw little-endian data)."""
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        dtype = {"float32": "F32", "float16": "F16"}[str(array.dtype)]
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def make_hf_folder(
    folder: Path,
    *,
    license_id: str | None = "apache-2.0",
    template: str | None = TEMPLATE,
    seed: int = 0,
) -> Path:
    """config.json, tokenizer.json + tokenizer_config.json, model.safetensors (10 x 8 + 8 parameters), card."""
    folder.mkdir(parents=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 4096}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    tokenizer_config: dict[str, object] = {"bos_token": None, "eos_token": {"content": "<|im_end|>"}}
    if template is not None:
        tokenizer_config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    rng = np.random.default_rng(seed)
    write_safetensors(
        folder / "model.safetensors",
        {"embed.weight": rng.normal(size=(10, 8)).astype(np.float32), "norm.weight": np.ones(8, np.float32)},
    )
    if license_id is not None:
        (folder / "README.md").write_text(f"---\nlicense: {license_id}\nbase_model: org/base\n---\n# Tiny\n")
    return folder


@pytest.fixture
def store(kaiyuan_home: Path) -> ModelStore:
    return ModelStore(kaiyuan_home)


def tree_and_blobs(store: ModelStore) -> set[str]:
    found = {p.name for p in store.blobs.root.iterdir()} if store.blobs.root.is_dir() else set()
    if store.trees.is_dir():
        found |= {f"trees/{p.name}" for p in store.trees.iterdir()}
    return found


def test_import_stores_each_file_and_lays_the_folder_out_again(store: ModelStore, tmp_path: Path) -> None:
    source = make_hf_folder(tmp_path / "Tiny-Qwen")
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref")
    (source / "pytorch_model.bin").write_bytes(b"pickle")
    manifest = store.import_hf_folder(source, "tiny-hf")
    assert manifest.format == "hf"
    assert sorted(manifest.files) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (manifest.architecture, manifest.parameters, manifest.quantization) == ("qwen2", 88, "F32")
    assert manifest.context_length == 4096
    assert manifest.license["id"] == "apache-2.0" and manifest.license["source"] == "card"
    assert manifest.lineage["relation"] == "finetune"
    assert manifest.lineage["base_models"][0]["repo_url"] == "org/base"
    folder = store.resolve("tiny-hf").model_path
    assert folder.is_dir() and folder.name == manifest.blob.digest
    for relative in manifest.files:
        assert (folder / relative).read_bytes() == (source / relative).read_bytes()
    assert manifest.size == sum((source / r).stat().st_size for r in manifest.files) + manifest.blob.size
    assert read_chat_template(manifest) == TEMPLATE
    assert folder_special_tokens(folder) == ("", "<|im_end|>")


def test_same_folder_twice_is_one_model_and_a_changed_one_needs_force(
    store: ModelStore, tmp_path: Path
) -> None:
    first = store.import_hf_folder(make_hf_folder(tmp_path / "a"), "tiny")
    assert store.import_hf_folder(make_hf_folder(tmp_path / "b"), "tiny").digests == first.digests
    with pytest.raises(Exception, match="already exists"):
        store.import_hf_folder(make_hf_folder(tmp_path / "c", seed=1), "tiny")
    replaced = store.import_hf_folder(make_hf_folder(tmp_path / "d", seed=1), "tiny", overwrite=True)
    assert replaced.blob.digest != first.blob.digest
    assert f"trees/{first.blob.digest}" not in tree_and_blobs(store)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", r"no config\.json"),
        ("tokenizer.json", r"no tokenizer \(tokenizer\.json"),
        ("model.safetensors", r"no \*\.safetensors weights"),
    ],
)
def test_a_folder_missing_a_part_is_refused_by_name(
    store: ModelStore, tmp_path: Path, remove: str, message: str
) -> None:
    folder = make_hf_folder(tmp_path / "broken")
    (folder / remove).unlink()
    before = tree_and_blobs(store)
    with pytest.raises(InvalidModelFile, match=message):
        store.import_hf_folder(folder, "broken")
    assert not store.exists("broken")
    assert tree_and_blobs(store) == before


def test_pickle_weights_are_named_and_refused(store: ModelStore, tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "old")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(InvalidModelFile, match=r"pytorch_model\.bin is a pickle.*convert it to safetensors"):
        store.import_hf_folder(folder, "old")


def test_copy_and_remove_keep_shared_files_until_the_last_name_goes(
    store: ModelStore, tmp_path: Path
) -> None:
    store.import_hf_folder(make_hf_folder(tmp_path / "a"), "one")
    copy = store.copy("one", "two")
    store.remove("one")
    assert (store.resolve("two").model_path / "model.safetensors").is_file()
    store.remove("two")
    leftover = tree_and_blobs(store)
    assert not any(name.startswith("trees/") for name in leftover)
    assert not set(copy.digests) & leftover


def test_a_deleted_folder_view_is_laid_out_again_and_gc_drops_stray_ones(
    store: ModelStore, tmp_path: Path
) -> None:
    import shutil

    manifest = store.import_hf_folder(make_hf_folder(tmp_path / "a"), "one")
    shutil.rmtree(manifest.model_path)
    assert (store.resolve("one").model_path / "config.json").is_file()
    (store.trees / "sha256-stray").mkdir()
    assert "trees/sha256-stray" in store.gc()
    assert store.resolve("one").model_path.is_dir()


def test_a_changed_blob_is_reported(store: ModelStore, tmp_path: Path) -> None:
    manifest = store.import_hf_folder(make_hf_folder(tmp_path / "a"), "one")
    blob = manifest.file_paths()["config.json"]
    blob.chmod(0o644)
    blob.write_text("{}")
    with pytest.raises(StoreError, match="changed on disk"):
        store.resolve("one")


def test_license_policy_refuses_before_anything_is_stored(kaiyuan_home: Path, tmp_path: Path) -> None:
    store = ModelStore(kaiyuan_home, policy={"deny": ["apache-2.0"]})
    with pytest.raises(LicenseDenied):
        store.import_hf_folder(make_hf_folder(tmp_path / "a"), "one")
    assert not store.exists("one")
    assert not any(p.name.startswith("sha256-") and not p.is_symlink() for p in store.blobs.root.glob("*"))


def test_template_from_chat_template_jinja_wins(store: ModelStore, tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "a", template=None, license_id=None)
    (folder / "chat_template.jinja").write_text("{{ messages[0].content }}")
    manifest = store.import_hf_folder(folder, "one")
    assert read_chat_template(manifest) == "{{ messages[0].content }}"
    assert manifest.license["source"] == "none"


MIT_TEXT = (
    "MIT License\n\nCopyright (c) 2024 Tiny\n\nPermission is hereby granted, free of charge, to any person obtaining "
    'a copy of this software and associated documentation files (the "Software"), to deal in the Software without '
    "restriction.\n\nThe above copyright notice and this permission notice shall be included in all copies or "
    "substantial portions of the Software.\n"
)


def test_license_from_a_license_file_or_config_json_when_there_is_no_card(
    store: ModelStore, tmp_path: Path
) -> None:
    with_file = make_hf_folder(tmp_path / "a", license_id=None)
    (with_file / "LICENSE").write_text(MIT_TEXT)
    manifest = store.import_hf_folder(with_file, "from-file")
    assert manifest.license["id"] == "mit" and manifest.license["source"] == "license_file"
    assert "LICENSE" in manifest.files

    with_config = make_hf_folder(tmp_path / "b", license_id=None, seed=2)
    config = json.loads((with_config / "config.json").read_text())
    (with_config / "config.json").write_text(json.dumps({**config, "license": "apache-2.0"}))
    manifest = store.import_hf_folder(with_config, "from-config")
    assert manifest.license["id"] == "apache-2.0" and manifest.license["source"] == "config.json"
