"""Content-addressed blob files: ``models/blobs/sha256-<hex>``, each verified by its SHA-256 when it is added.

Owns: hashing (8 MiB chunks, with a progress callback), staging a file as ``blobs/.partial-<random>`` (copy,
hard link or move) and committing it under its digest with an atomic rename, links to files outside the store,
removing blobs. Must not know: manifests, names, locks (the store decides when a blob may go).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kaiyuan.errors import InvalidRequest, StoreError

__all__ = ["CHUNK_SIZE", "BlobStore", "Progress", "Staged", "free_bytes", "hash_file", "normalise_digest"]

CHUNK_SIZE = 8 * 1024 * 1024
PARTIAL_PREFIX = ".partial-"
Progress = Callable[[int, int], None]  # (bytes done, bytes total)

_HEX = re.compile(r"[0-9a-f]{64}")


def normalise_digest(digest: str) -> str:
    """``sha256:<hex>``, ``sha256-<hex>`` or a bare hex digest → ``sha256-<hex>``."""
    text = digest.strip().lower()
    for prefix in ("sha256:", "sha256-"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if not _HEX.fullmatch(text):
        raise InvalidRequest(f"{digest!r} is not a SHA-256 digest (sha256:<64 hex digits>)")
    return "sha256-" + text


def _hash_stream(read: Callable[[int], bytes], total: int, progress: Progress | None) -> tuple[str, int]:
    sha = hashlib.sha256()
    done = 0
    if progress:
        progress(0, total)
    while chunk := read(CHUNK_SIZE):
        sha.update(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return "sha256-" + sha.hexdigest(), done


def hash_file(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """``(sha256-<hex>, size)`` of a file, read in 8 MiB chunks."""
    with path.open("rb") as handle:
        total = os.fstat(handle.fileno()).st_size
        return _hash_stream(handle.read, total, progress)


@dataclass
class Staged:
    """A file inside the blob folder under a temporary name, hashed, waiting for ``commit`` or ``discard``."""

    path: Path
    digest: str
    size: int
    linked: bool  # a hard link to the caller's file (shares its inode), not a private copy


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest

    def has(self, digest: str) -> bool:
        """True when the blob is present and readable (a link whose target vanished does not count)."""
        return self.path(digest).is_file()

    def _partial(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"

    def stage_copy(self, source: Path, progress: Progress | None = None) -> Staged:
        """Copy ``source`` into the blob folder, hashing while copying; fsynced before it can be committed."""
        partial = self._partial()
        try:
            with source.open("rb") as src, partial.open("xb") as dst:
                total = os.fstat(src.fileno()).st_size

                def read(n: int) -> bytes:
                    chunk = src.read(n)
                    dst.write(chunk)
                    return chunk

                digest, size = _hash_stream(read, total, progress)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Staged(partial, digest, size, linked=False)

    def stage_link(self, source: Path, progress: Progress | None = None) -> Staged:
        """Hard-link ``source`` into the blob folder (no copy) and hash it; copies when linking is impossible
        (another filesystem, or a filesystem without hard links)."""
        partial = self._partial()
        try:
            os.link(source, partial)
        except OSError:
            return self.stage_copy(source, progress)
        try:
            digest, size = hash_file(partial, progress)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Staged(partial, digest, size, linked=True)

    def stage_move(self, source: Path, progress: Progress | None = None) -> Staged:
        """Hash ``source`` and move it into the blob folder (a rename on the same filesystem, else copy + delete)."""
        digest, size = hash_file(source, progress)
        partial = self._partial()
        try:
            os.replace(source, partial)
        except OSError:
            staged = self.stage_copy(source)
            source.unlink(missing_ok=True)
            return staged
        return Staged(partial, digest, size, linked=False)

    def commit(self, staged: Staged) -> Path:
        """Give a staged file its digest name (atomic rename). A blob file already present with the right size is
        kept; a link to a file outside the store (the bundled model) is replaced by the store's own copy."""
        target = self.path(staged.digest)
        try:
            if not target.is_symlink() and target.is_file() and target.stat().st_size == staged.size:
                staged.path.unlink(missing_ok=True)
                return target
            if not staged.linked:
                staged.path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(staged.path, target)
        except OSError as exc:
            staged.path.unlink(missing_ok=True)
            raise StoreError(
                f"cannot add blob {staged.digest} to {self.root}: {exc.strerror or exc}"
            ) from exc
        return target

    @staticmethod
    def discard(staged: Staged) -> None:
        staged.path.unlink(missing_ok=True)

    def link_external(self, digest: str, file: Path) -> bool:
        """Make ``blobs/<digest>`` a symbolic link to ``file`` (a verified file kept outside the store).
        Returns False where symbolic links cannot be made; the caller then records the path instead."""
        target = self.path(digest)
        if target.is_symlink() and Path(os.readlink(target)) == file:
            return True
        if target.is_file() and not target.is_symlink():
            return True  # a private copy with this digest is already there
        link = self._partial()
        try:
            link.symlink_to(file)
            os.replace(link, target)
        except OSError:
            link.unlink(missing_ok=True)
            return False
        return True

    def remove(self, digest: str) -> None:
        """Delete a blob (for a link: the link, never its target)."""
        path = self.path(digest)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def digests(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith("sha256-"))

    def partials(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(PARTIAL_PREFIX))


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
