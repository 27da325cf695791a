"""Resolving, copying, removing with garbage collection, add_blob / write_manifest for pulls, damaged stores."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.errors import DigestMismatch, ModelExists, ModelNotFound, StoreError
from kaiyuan.store import BlobRef, Manifest, ModelStore, read_chat_template
from tests.fixtures import tiny_gguf

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module
Factory = Callable[..., Path]


@pytest.fixture
def store(kaiyuan_home: Path) -> ModelStore:
    return ModelStore(kaiyuan_home)


def test_unknown_model_suggests_close_names(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    store.import_gguf(tiny_gguf_factory(), "tinyllama:q4")
    with pytest.raises(ModelNotFound) as caught:
        store.resolve("smolm2")
    assert "smollm2:135m" in caught.value.suggestions
    with pytest.raises(ModelNotFound) as caught:
        store.resolve("tinyllama")  # the name exists with another tag
    assert caught.value.suggestions[0] == "tinyllama:q4"
    with pytest.raises(ModelNotFound) as caught:
        store.resolve("completely-different")
    assert caught.value.suggestions == []
    assert "kaiyuan list" in caught.value.message


def test_copy_shares_blobs_and_remove_collects_garbage(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    original = store.import_gguf(tiny_gguf_factory(), "a")
    copy = store.copy("a", "b:v2")
    assert copy.full_name == "b:v2" and copy.blob == original.blob
    with pytest.raises(ModelExists):
        store.copy("a", "b:v2")
    store.remove("a")
    assert original.model_path.is_file(), "still used by b:v2"
    assert not store.exists("a")
    store.remove("b:v2")
    assert not original.model_path.exists(), "no model uses the blob any more"
    assert not (store.root / "manifests" / "b").exists(), "empty manifest folders are removed"
    with pytest.raises(ModelNotFound):
        store.remove("a")


def test_removing_a_copy_of_the_bundled_model_keeps_the_link(store: ModelStore) -> None:
    copy = store.copy("smollm2", "my-smol")
    store.remove("my-smol")
    assert store.resolve("smollm2").model_path.is_file()
    assert copy.blob == store.resolve("smollm2").blob


def test_list_is_sorted_and_includes_everything(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    store.import_gguf(tiny_gguf_factory(), "zeta")
    store.import_gguf(tiny_gguf_factory(), "hf.co/org/alpha:q4_0")
    assert [m.full_name for m in store.list()] == ["hf.co/org/alpha:q4_0", "smollm2:135m", "zeta:latest"]


def test_add_blob_verifies_the_digest(store: ModelStore, tmp_path: Path) -> None:
    data = b"some downloaded bytes" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    download = tmp_path / "download.part"
    download.write_bytes(data)
    with pytest.raises(DigestMismatch, match="expected sha256-"):
        store.add_blob(download, expected_digest="sha256:" + "0" * 64)
    assert store.blobs.digests() == []
    assert not store.blobs.partials()
    added, size = store.add_blob(download, expected_digest=digest)
    assert (added, size) == ("sha256-" + digest[7:], len(data))
    assert download.exists(), "copied, not moved"
    assert (store.root / "blobs" / added).read_bytes() == data


def test_add_blob_move(store: ModelStore) -> None:
    download = store.partial_dir / "my-download"
    download.write_bytes(b"x" * 100)
    digest, _ = store.add_blob(download, move=True)
    assert not download.exists()
    assert store.blobs.has(digest)


def test_write_manifest_needs_its_blobs_and_collects_replaced_ones(
    store: ModelStore, tiny_gguf_factory: Factory, tmp_path: Path
) -> None:
    base = store.import_gguf(tiny_gguf_factory(), "pulled")
    ghost = dataclasses.replace(base, blob=BlobRef("sha256-" + "9" * 64, 5))
    with pytest.raises(StoreError, match="add it with add_blob first"):
        store.write_manifest(ghost)
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf_factory(seed=3).read_bytes())
    digest, size = store.add_blob(other)
    store.write_manifest(dataclasses.replace(base, blob=BlobRef(digest, size)))
    assert store.resolve("pulled").blob.digest == digest
    assert not base.model_path.exists()


def test_gc_removes_orphans_and_stale_partials(store: ModelStore, tmp_path: Path) -> None:
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"orphan")
    digest, _ = store.add_blob(orphan)
    stale = store.partial_dir / ".partial-crashed"
    stale.write_bytes(b"half")
    old = time.time() - 2 * 86400
    os.utime(stale, (old, old))
    fresh = store.partial_dir / ".partial-in-progress"
    fresh.write_bytes(b"busy")
    store.list()
    removed = store.gc()
    assert digest in removed and ".partial-crashed" in removed
    assert fresh.exists() and not stale.exists()
    assert store.resolve("smollm2").model_path.is_file()


def test_corrupt_manifest_is_reported_and_skipped(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    store.import_gguf(tiny_gguf_factory(), "good")
    broken = store.root / "manifests" / "broken" / "latest.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")
    assert [m.full_name for m in store.list()] == ["good:latest", "smollm2:135m"]
    with pytest.raises(StoreError) as caught:
        store.resolve("broken")
    assert "corrupt manifest" in caught.value.message and str(broken) in caught.value.message
    good = store.resolve("good")
    store.remove("good")  # garbage collection is skipped while a manifest cannot be read
    assert good.model_path.exists()


def test_missing_or_changed_blob_is_an_error(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    manifest = store.import_gguf(tiny_gguf_factory(), "fragile")
    path = manifest.model_path
    path.chmod(0o644)
    with path.open("ab") as handle:
        handle.write(b"extra")
    with pytest.raises(StoreError, match="changed on disk"):
        store.resolve("fragile")
    path.unlink()
    with pytest.raises(StoreError, match="is missing"):
        store.resolve("fragile")


def test_read_chat_template(store: ModelStore, tiny_gguf_factory: Factory) -> None:
    manifest = store.import_gguf(tiny_gguf_factory(chat_template="{{ messages }}"), "templated")
    assert read_chat_template(manifest) == "{{ messages }}"
    assert read_chat_template(store.import_gguf(tiny_gguf_factory(), "plain")) is None
    bundled = store.resolve("smollm2")
    assert "<|im_start|>" in (read_chat_template(bundled) or "")
    tampered = dataclasses.replace(manifest, chat_template_digest="sha256-" + "0" * 64)
    with pytest.raises(StoreError, match="does not match"):
        read_chat_template(tampered)


def test_manifest_without_store_has_no_path() -> None:
    manifest = Manifest(name="x", tag="y", blob=BlobRef("sha256-" + "0" * 64, 1))
    with pytest.raises(StoreError, match="not attached"):
        _ = manifest.model_path
