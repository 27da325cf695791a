"""Pulling a Hugging Face-format model: a repository of ``config.json``, tokenizer files and safetensors shards.

Owns: deciding that a repository is such a model (no GGUF files, or the selector ``:hf`` / ``:safetensors``),
which of its files to fetch (``_hf_folder.wanted_file``: no hidden files, no pickles or other formats), checking
before any download that they make a model (config, tokenizer, weights), downloading each file resumably and
verified (LFS SHA-256 or git blob id) into ``models/.partial-pull-<key>/``, and handing the folder to
``ModelStore.import_hf_folder`` (moved, not copied). An interrupted pull keeps its finished files for the next one.
Must not know: GGUF, the CLI, HTTP servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from filelock import FileLock, Timeout

from kaiyuan.errors import PullError, StoreError
from kaiyuan.store._blobs import free_bytes
from kaiyuan.store._hf_folder import check_model_files, safe_relative_path, wanted_file
from kaiyuan.store._manifest import Manifest
from kaiyuan.store.pull._download import Expected, download
from kaiyuan.store.pull._quant import RemoteFile

if TYPE_CHECKING:
    from kaiyuan.store._store import ModelStore

__all__ = ["FOLDER_SELECTORS", "fetch_folder", "folder_files", "is_folder_repo"]

FOLDER_SELECTORS = ("hf", "safetensors")


def is_folder_repo(files: Sequence[RemoteFile], selector: str | None) -> bool:
    """Whether a pull of this repository takes the Hugging Face-format model rather than a GGUF file."""
    if selector is not None:
        return selector.lower() in FOLDER_SELECTORS
    has_gguf = any(f.path.lower().endswith(".gguf") for f in files)
    return not has_gguf and any(f.path.endswith(".safetensors") for f in files)


def folder_files(files: Sequence[RemoteFile], where: str) -> list[RemoteFile]:
    """The repository files a folder pull fetches; InvalidModelFile (naming what is missing) if no model."""
    chosen = [f for f in files if wanted_file(f.path)]
    for item in chosen:
        safe_relative_path(item.path)
    skipped = [f.basename for f in files if not wanted_file(f.path) and not f.basename.startswith(".")]
    check_model_files(where, [f.path for f in chosen], skipped=skipped)
    return chosen


def fetch_folder(
    store: ModelStore,
    client: httpx.Client,
    files: Sequence[RemoteFile],
    url_of: Callable[[str], str],
    *,
    key: str,
    what: str,
    headers: dict[str, str],
    emit: Callable[[str, str | None, int | None, int | None], None],
    cancel: threading.Event | None,
    setting: str,
    add: Callable[[Path], Manifest],
) -> Manifest:
    """Download ``files`` into a resumable partial folder, then ``add`` it (``import_hf_folder``); the partial
    folder is removed once the model is in the store."""
    work = store.root / f".partial-pull-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    lock = FileLock(str(work) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise PullError(f"{what} is being pulled by another kaiyuan process; wait for it to finish") from exc
    try:
        total = sum(f.size or 0 for f in files)
        have = sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) if work.is_dir() else 0
        if free_bytes(store.root) < total - have:
            raise StoreError(
                f"not enough disk space in {store.root} for {what} ({total} bytes); free some space"
            )
        for item in files:
            dest = work / safe_relative_path(item.path)
            if dest.is_file() and item.size is not None and dest.stat().st_size == item.size:
                continue  # finished by an earlier, interrupted pull (verified then)
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            label = item.sha256.removeprefix("sha256-") if item.sha256 else None
            wire = f"sha256:{label}" if label else None
            status = f"pulling {item.path}"

            def on_bytes(done: int, size: int, status: str = status, wire: str | None = wire) -> None:
                emit(status, wire, size or None, done)

            download(
                client,
                url_of(item.path),
                part,
                expected=Expected(sha256=item.sha256, git_sha1=item.git_sha1, size=item.size),
                what=f"{what}/{item.path}",
                headers=headers,
                progress=on_bytes,
                cancel=cancel,
                setting=setting,
            )
            part.replace(dest)
        emit("verifying and adding the model", None, None, None)
        manifest = add(work)
        shutil.rmtree(work, ignore_errors=True)
        return manifest
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            Path(str(work) + ".lock").unlink()
