"""import_gguf: validation before anything is stored, hashing while copying, names, overwrite, policy hook."""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.errors import InvalidModelFile, InvalidRequest, LicenseDenied, ModelExists
from kaiyuan.store import ModelStore
from tests.fixtures import tiny_gguf

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module
Factory = Callable[..., Path]


def snapshot(root: Path) -> set[str]:
    """Every path under root (files, links, folders), to prove a failed import left nothing behind."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def store(kaiyuan_home: Path) -> ModelStore:
    return ModelStore(kaiyuan_home)


def test_import_records_what_the_file_says(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        arch="qwen3",
        chat_template="{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
        license={"id": "mit", "name": "MIT License", "link": "https://example.org/LICENSE"},
        base_models=[
            {"name": "Qwen3 0.6B Base", "organization": "Qwen", "repo_url": "https://huggingface.co/Qwen/x"}
        ],
        n_ctx_train=1024,
    )
    manifest = store.import_gguf(path, "tiny-qwen:v1")
    assert manifest.full_name == "tiny-qwen:v1"
    assert (manifest.architecture, manifest.quantization, manifest.context_length) == ("qwen3", "Q4_0", 1024)
    assert manifest.parameters > 0
    assert manifest.license == {
        "id": "mit",
        "name": "MIT License",
        "link": "https://example.org/LICENSE",
        "source": "gguf",
    }
    assert manifest.lineage["relation"] == "finetune"
    assert manifest.lineage["base_models"] == [
        {
            "name": "Qwen3 0.6B Base",
            "organization": "Qwen",
            "repo_url": "https://huggingface.co/Qwen/x",
            "version": None,
        }
    ]
    assert manifest.source == f"import:{path}"
    data = path.read_bytes()
    assert manifest.blob.digest == "sha256-" + hashlib.sha256(data).hexdigest()
    assert manifest.blob.size == len(data)
    assert manifest.model_path == store.root / "blobs" / manifest.blob.digest
    assert manifest.model_path.read_bytes() == data
    manifest_file = store.root / "manifests" / "tiny-qwen" / "v1.json"
    assert manifest_file.is_file()
    assert ModelStore(store.home).resolve("tiny-qwen:v1") == manifest
    assert not list((store.root / "blobs").glob(".partial-*"))


def test_progress_reports_bytes(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory()
    seen: list[tuple[int, int]] = []
    store.import_gguf(path, "tiny", progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_same_file_same_name_is_a_no_op(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory()
    first = store.import_gguf(path, "tiny")
    again = store.import_gguf(path, "tiny")
    assert again == first


def test_taken_name_needs_overwrite(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    old = store.import_gguf(tiny_gguf_factory(seed=1), "tiny")
    other = tiny_gguf_factory(seed=2)
    with pytest.raises(ModelExists, match="already exists"):
        store.import_gguf(other, "tiny")
    assert store.resolve("tiny") == old
    new = store.import_gguf(other, "tiny", overwrite=True)
    assert new.blob.digest != old.blob.digest
    assert not old.model_path.exists(), "the replaced blob is garbage-collected"
    assert new.model_path.is_file()


def test_caller_lineage_and_license_replace_the_files(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    manifest = store.import_gguf(
        tiny_gguf_factory(),
        "tiny",
        lineage={"relation": "quantized", "base_models": [{"name": "Org/Model"}]},
        license={"id": "apache-2.0", "source": "card"},
        source="hf://org/model/tiny.gguf",
    )
    assert manifest.lineage == {
        "relation": "quantized",
        "base_models": [{"name": "Org/Model"}],
        "datasets": [],
    }
    assert manifest.license == {"id": "apache-2.0", "source": "card"}
    assert manifest.source == "hf://org/model/tiny.gguf"
    with pytest.raises(InvalidRequest, match="relation"):
        store.import_gguf(tiny_gguf_factory(), "tiny2", lineage={"relation": "stolen"})


def test_link_shares_the_file(store: ModelStore, tiny_gguf_factory: Factory, tmp_path: Path) -> None:
    original = tmp_path / "mine.gguf"
    shutil.copyfile(tiny_gguf_factory(), original)
    manifest = store.import_gguf(original, "linked", link=True)
    assert manifest.model_path.stat().st_ino == original.stat().st_ino


# -- bad files: one clear error, nothing stored ------------------------------------------------------------------


def _lying_kv_count(good: bytes, count: int) -> bytes:
    return good[:16] + struct.pack("<Q", count) + good[24:]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda good: b"just some text\n" * 100, "not a GGUF file (bad magic"),
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: good[:-1], "truncated: tensor"),
        (lambda good: _lying_kv_count(good, 10**9), "claims 1000000000 metadata keys"),
        (lambda good: _lying_kv_count(good, struct.unpack("<Q", good[16:24])[0] + 1), ""),
    ],
    ids=["text", "half", "one-byte-short", "lying-count", "count-off-by-one"],
)
def test_bad_files_add_nothing(
    store: ModelStore,
    tiny_gguf_factory: Factory,
    tmp_path: Path,
    make: Callable[[bytes], bytes],
    expected: str,
) -> None:
    store.list()  # the bundled model is registered; the store is not empty
    before = snapshot(store.home)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(make(tiny_gguf_factory().read_bytes()))
    with pytest.raises(InvalidModelFile) as caught:
        store.import_gguf(bad, "bad")
    assert expected in caught.value.message
    assert "\n" not in caught.value.message
    assert snapshot(store.home) == before


def test_adapter_files_are_not_models(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    adapter = tiny_gguf_factory(metadata={"general.type": "adapter"})
    with pytest.raises(InvalidModelFile, match="LoRA adapter"):
        store.import_gguf(adapter, "adapter")
    assert not store.exists("adapter")


def test_split_files_are_refused(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    part = tiny_gguf_factory(metadata={"split.count": 3, "split.no": 0, "split.tensors.count": 20})
    with pytest.raises(InvalidModelFile, match="split into 3 files"):
        store.import_gguf(part, "split")
    assert not store.exists("split")


def test_invalid_name_is_rejected_before_reading(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="invalid model name"):
        store.import_gguf(tmp_path / "absent.gguf", "bad name!")


# -- license policy hook -------------------------------------------------------------------------------------------


def test_policy_hook_can_refuse_an_import(
    kaiyuan_home: Path, tiny_gguf_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kaiyuan.license

    calls: list[tuple[dict[str, object], dict[str, object], str]] = []

    def enforce_policy(model: dict[str, object], policy: dict[str, object], action: str) -> None:
        calls.append((model, policy, action))
        raise LicenseDenied("license policy forbids import", reasons=["mit is denied"])

    monkeypatch.setattr(kaiyuan.license, "enforce_policy", enforce_policy, raising=False)
    store = ModelStore(kaiyuan_home, policy={"deny": ["mit"]})
    store.list()
    before = snapshot(kaiyuan_home)
    with pytest.raises(LicenseDenied):
        store.import_gguf(tiny_gguf_factory(license={"id": "mit"}), "denied")
    assert snapshot(kaiyuan_home) == before
    model, policy, action = calls[0]
    assert (model["name"], policy, action) == ("denied:latest", {"deny": ["mit"]}, "import")
    assert model["license"] == {"id": "mit", "name": None, "link": None, "source": "gguf"}
