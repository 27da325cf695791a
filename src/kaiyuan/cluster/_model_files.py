"""Model files on every node: a replica runs a model from a path it can read, never from a half-copied file.

In order, ``ensure_model_files`` uses: the manifest's own paths when they are readable here with the right size
(one machine, or a shared ``KAIYUAN_HOME`` / model path on every node); the same blob already in this node's
store (``<home>/models/blobs/sha256-<hex>``); else a copy from the head's store, pulled chunk by chunk from the
``BlobSource`` actor the front starts on its own node, written under a temporary name, sha256-verified and only
then renamed into place (a crash or a bad digest leaves no file under the blob's name).

Owns that copy and the ``BlobSource`` actor (which serves only the digests the front registered). Must not know
engines or HTTP.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kaiyuan.config import Settings
from kaiyuan.errors import DigestMismatch, StoreError
from kaiyuan.store import BlobRef, Manifest

__all__ = ["BLOB_SOURCE_NAME", "BLOB_SOURCE_NAMESPACE", "BlobSource", "copy_verified", "ensure_model_files"]

BLOB_SOURCE_NAME = "kaiyuan-blob-source"
BLOB_SOURCE_NAMESPACE = "kaiyuan"
_CHUNK = 8 << 20  # bytes per read from the head


class BlobSource:
    """Reads registered blobs by digest for replicas on other nodes (a Ray actor on the head)."""

    def __init__(self) -> None:
        self._paths: dict[str, str] = {}

    def register(self, digest: str, path: str) -> None:
        self._paths[digest] = path

    def read(self, digest: str, offset: int, size: int) -> bytes:
        path = self._paths.get(digest)
        if path is None:
            raise StoreError(f"the head does not serve blob {digest}")
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


def _readable(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size and os.access(path, os.R_OK)
    except OSError:
        return False


def copy_verified(read: Callable[[int, int], bytes], digest: str, size: int, dest: Path) -> None:
    """Copy ``size`` bytes from ``read(offset, n)`` to ``dest``: written to a temporary file beside it, checked
    against ``digest`` (``sha256-<hex>``), fsynced, then renamed. Raises ``DigestMismatch`` (nothing left behind)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    sha = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            offset = 0
            while offset < size:
                chunk = read(offset, min(_CHUNK, size - offset))
                if not chunk:
                    raise DigestMismatch(f"the head's copy of {digest} ended at byte {offset} of {size}")
                sha.update(chunk)
                out.write(chunk)
                offset += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = f"sha256-{sha.hexdigest()}"
        if got != digest:
            raise DigestMismatch(
                f"copied model file has digest {got}, expected {digest}; the head's store is damaged"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _local_blob(ref: BlobRef, path: Path, blobs: Path) -> BlobRef:
    """``ref`` made readable on this node; copies it from the head when it is nowhere here."""
    if _readable(path, ref.size):
        return ref
    local = blobs / ref.digest
    if not _readable(local, ref.size):
        import ray

        source = ray.get_actor(BLOB_SOURCE_NAME, namespace=BLOB_SOURCE_NAMESPACE)

        def read(offset: int, n: int) -> bytes:
            chunk: Any = ray.get(source.read.remote(ref.digest, offset, n))
            return bytes(chunk)

        copy_verified(read, ref.digest, ref.size, local)
    return BlobRef(ref.digest, ref.size, str(local))


def ensure_model_files(manifest: Manifest, settings: Settings) -> Manifest:
    """``manifest`` with model and adapter paths readable on this node (copied from the head if needed). A
    Hugging Face folder is used where the store laid it out; it is not copied between nodes (use a shared path)."""
    if manifest.is_folder:
        if not manifest.model_path.is_dir():
            raise StoreError(
                f"{manifest.full_name} is a Hugging Face folder that this node cannot read at {manifest.model_path}; "
                "put KAIYUAN_HOME (or the model) on a path every node shares"
            )
        return manifest
    blobs = settings.models_dir / "blobs"
    blob = _local_blob(manifest.blob, manifest.model_path, blobs)
    adapters = [
        _local_blob(ref, path, blobs)
        for ref, path in zip(manifest.adapters, manifest.adapter_paths, strict=True)
    ]
    if blob is manifest.blob and all(a is b for a, b in zip(adapters, manifest.adapters, strict=True)):
        return manifest
    return replace(manifest, blob=blob, adapters=adapters)
