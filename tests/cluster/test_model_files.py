"""Model files reach a replica whole or not at all: copies from the head are sha256-verified before they appear
under the blob's name, and a replica that can read the store's own file uses it in place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kaiyuan.cluster._model_files import copy_verified, ensure_model_files
from kaiyuan.config import load_settings
from kaiyuan.errors import DigestMismatch
from kaiyuan.store import ModelStore


def _reader(data: bytes, chunk: int = 7):
    return lambda offset, n: data[offset : offset + min(n, chunk)]


def test_a_verified_copy_lands_under_the_blob_name(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(256)) * 40
    digest = "sha256-" + hashlib.sha256(data).hexdigest()
    dest = tmp_path / "blobs" / digest
    copy_verified(_reader(data), digest, len(data), dest)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == [digest]  # no temporary file left


def test_a_copy_with_the_wrong_digest_or_cut_short_leaves_nothing(tmp_path: Path) -> None:
    data = b"GGUF" + b"x" * 1000
    wrong = "sha256-" + hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "blobs" / wrong
    with pytest.raises(DigestMismatch, match="damaged"):
        copy_verified(_reader(data), wrong, len(data), dest)
    right = "sha256-" + hashlib.sha256(data).hexdigest()
    with pytest.raises(DigestMismatch, match="ended at byte"):
        copy_verified(_reader(data[:500]), right, len(data), tmp_path / "blobs" / right)
    assert list((tmp_path / "blobs").iterdir()) == []


def test_a_readable_store_file_is_used_in_place(kaiyuan_home: Path) -> None:
    settings = load_settings()
    manifest = ModelStore.from_settings(settings).resolve("smollm2")
    assert ensure_model_files(manifest, settings) is manifest
