"""One pull, start to finish: reference → hub plan → license check → resumable download → model in the store.

Owns the order of a pull, the same for every hub:

1. resolve the reference on its hub (file list and the GGUF chosen by quantization, or the registry manifest);
2. read the model card (``README.md``) or the registry's license/system/params layers, and check the license
   policy for ``pull`` with what they declare, **before** any weights are fetched;
3. download the GGUF into ``blobs/.partial-pull-<digest>`` (resumable, verified, with progress events), under a
   file lock so two pulls of one file do not write it at once;
4. validate the file as a GGUF model, check the policy again with the license the file itself declares, then add
   the blob and write the manifest last: a failed or interrupted pull never lists a model.

A Hugging Face repository without GGUF files (or ``hf://ORG/REPO:hf``) is a Hugging Face-format model: its
config, tokenizer and safetensors files are fetched the same way, file by file (``_folder.py``), and added with
``ModelStore.import_hf_folder``.

Progress goes to an optional listener as ``PullEvent`` objects shaped like Ollama's pull stream (``status``,
``digest``, ``total``, ``completed``). Must not know HTTP servers or the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from filelock import FileLock, Timeout

from kaiyuan.errors import InvalidModelFile, KaiyuanError, ModelExists, ModelNotFound, PullError, StoreError
from kaiyuan.store._blobs import free_bytes
from kaiyuan.store._facts import gguf_facts, license_from_gguf, lineage_from_gguf, normalise_lineage
from kaiyuan.store._manifest import BlobRef, Manifest
from kaiyuan.store._names import parse_name
from kaiyuan.store._policy import _check_policy
from kaiyuan.store.pull._download import Expected, download, http_client, network_error
from kaiyuan.store.pull._folder import fetch_folder, folder_files, is_folder_repo
from kaiyuan.store.pull._hf import HuggingFace
from kaiyuan.store.pull._modelscope import ModelScope
from kaiyuan.store.pull._ollama_registry import OllamaRegistry, parse_params, registry_url
from kaiyuan.store.pull._quant import RemoteFile, choose_gguf, quant_label
from kaiyuan.store.pull._refs import PullRef, parse_ref

if TYPE_CHECKING:
    from kaiyuan.config import Settings
    from kaiyuan.store._store import ModelStore

__all__ = ["PullEvent", "PullListener", "pull_model"]

log = logging.getLogger(__name__)

_MAX_LICENSE_TEXT = 64 * 1024  # license text kept in the manifest's license record


@dataclass(frozen=True)
class PullEvent:
    """One progress report, in the shape of Ollama's ``/api/pull`` stream."""

    status: str
    digest: str | None = None  # "sha256:<hex>" of the file being downloaded
    total: int | None = None  # bytes
    completed: int | None = None  # bytes


PullListener = Callable[[PullEvent], None]


@dataclass
class _Plan:
    """What a reference resolved to before any weights are fetched."""

    name: str  # default store name
    source: str  # recorded in the manifest
    url: str
    what: str  # how messages name the file
    expected: Expected
    headers: dict[str, str] = field(default_factory=dict)
    license: dict[str, Any] | None = None  # declared by the card / registry; None: take the GGUF's
    lineage: dict[str, Any] | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    folder: list[RemoteFile] = field(default_factory=list)  # a Hugging Face-format model: the files to fetch
    url_of: Callable[[str], str] | None = None  # the download URL of one of ``folder``'s files


def _card_model(text: str | None, where: str) -> dict[str, Any] | None:
    """License and lineage a model card declares (None: no card, or one without front matter)."""
    if not text:
        return None
    from kaiyuan.license import model_from_card, parse_card

    try:
        card = parse_card(text)
    except InvalidModelFile as exc:
        log.warning(
            "%s: the model card cannot be read (%s); relying on the GGUF's metadata", where, exc.message
        )
        return None
    return model_from_card(card) if card else None


def _read_card(
    ref: PullRef, hub: HuggingFace | ModelScope, revision: str, files: list[RemoteFile], emit: PullListener
) -> dict[str, Any] | None:
    readme = next((f for f in files if f.path.lower() == "readme.md"), None)
    if readme is None:
        return None
    emit(PullEvent("reading model card"))
    return _card_model(hub.read_text(ref.repo, revision, readme.path), hub.where(ref.repo, revision))


def _folder_plan(
    ref: PullRef, hub: HuggingFace | ModelScope, revision: str, files: list[RemoteFile], emit: PullListener
) -> _Plan:
    where = hub.where(ref.repo, revision)
    chosen = folder_files(files, where)
    card = _read_card(ref, hub, revision, files, emit)
    declared = card.get("license") if card else None
    return _Plan(
        name=ref.default_name("hf"),
        source=f"{ref.hub}://{ref.repo}" + (f"@{ref.revision}" if ref.revision else ""),
        url=hub.file_url(ref.repo, revision, "config.json"),
        what=f"{ref.hub}://{ref.repo}",
        expected=Expected(),
        headers=dict(getattr(hub, "headers", {})),
        license=declared if declared and declared.get("id") else None,
        lineage=card.get("lineage") if card and card.get("lineage", {}).get("base_models") else None,
        folder=chosen,
        url_of=lambda path: hub.file_url(ref.repo, revision, path),
    )


def _hub_plan(ref: PullRef, hub: HuggingFace | ModelScope, revision: str, emit: PullListener) -> _Plan:
    where = hub.where(ref.repo, revision)
    files = hub.list_files(ref.repo, revision)
    if is_folder_repo(files, ref.selector):
        return _folder_plan(ref, hub, revision, files, emit)
    chosen: RemoteFile = choose_gguf(files, ref.selector, where)
    card = _read_card(ref, hub, revision, files, emit)
    label = quant_label(chosen.path)
    declared = card.get("license") if card else None
    return _Plan(
        name=ref.default_name(label.lower() if label else None),
        source=f"{ref.hub}://{ref.repo}/{chosen.path}" + (f"@{ref.revision}" if ref.revision else ""),
        url=hub.file_url(ref.repo, revision, chosen.path),
        what=f"{ref.hub}://{ref.repo}/{chosen.path}",
        expected=Expected(sha256=chosen.sha256, git_sha1=chosen.git_sha1, size=chosen.size),
        headers=dict(getattr(hub, "headers", {})),
        license=declared if declared and declared.get("id") else None,
        lineage=card.get("lineage") if card and card.get("lineage", {}).get("base_models") else None,
    )


def _identify_license(text: str) -> dict[str, Any]:
    """The license record of a registry's license layer: identified by its text where kaiyuan knows it."""
    from kaiyuan.license import detect_from_path

    with tempfile.TemporaryDirectory(prefix="kaiyuan-license-") as folder:
        path = Path(folder) / "LICENSE"
        path.write_text(text, encoding="utf-8")
        found = detect_from_path(path).get("license") or {}
    record: dict[str, Any] = {"id": found.get("id"), "name": None, "link": None, "source": "ollama-registry"}
    record["text"] = text[:_MAX_LICENSE_TEXT]
    return record


def _ollama_plan(ref: PullRef, settings: Settings, client: httpx.Client) -> _Plan:
    base = registry_url(ref.registry, settings.ollama_registry)
    where = f"ollama://{ref.registry + '/' if ref.registry else ''}{ref.repo}:{ref.tag}"
    registry = OllamaRegistry(client, base)
    manifest = registry.manifest(ref.repo, ref.tag, where)
    licenses: list[str] = []
    system = None
    parameters: dict[str, Any] = {}
    for layer in manifest.small:
        text = registry.read_small(ref.repo, layer, where)
        if layer.kind == "license":
            licenses.append(text)
        elif layer.kind == "system":
            system = text
        elif layer.kind == "params":
            parameters = parse_params(text, where)
    license_record = _identify_license("\n\n".join(licenses)) if licenses else None
    layer = manifest.model
    return _Plan(
        name=ref.default_name(),
        source=f"{where}@{layer.wire_digest}",
        url=registry.blob_url(ref.repo, layer),
        what=where,
        expected=Expected(sha256=layer.digest, size=layer.size),
        license=license_record,
        system=system or None,
        parameters=parameters,
    )


def _plan(ref: PullRef, settings: Settings, client: httpx.Client, emit: PullListener) -> _Plan:
    if ref.hub == "hf":
        hf = HuggingFace(client, settings.hf_endpoint, settings.hf_token)
        return _hub_plan(ref, hf, ref.revision or "main", emit)
    if ref.hub == "ms":
        return _hub_plan(
            ref, ModelScope(client, settings.modelscope_endpoint), ref.revision or "master", emit
        )
    return _ollama_plan(ref, settings, client)


def _endpoint_setting(ref: PullRef) -> str:
    """The setting a user checks when the hub of ``ref`` cannot be reached."""
    if ref.hub == "hf":
        return "HF_ENDPOINT / KAIYUAN_HF_ENDPOINT"
    if ref.hub == "ms":
        return "KAIYUAN_MODELSCOPE_ENDPOINT"
    if ref.registry is not None:
        return f"the registry host {ref.registry} in the reference"
    return "KAIYUAN_OLLAMA_REGISTRY"


def _existing(store: ModelStore, name: str) -> Manifest | None:
    try:
        return store.resolve(name)
    except (ModelNotFound, StoreError):
        return None


def _partial_key(plan: _Plan) -> str:
    if plan.expected.sha256:
        return plan.expected.sha256.removeprefix("sha256-")
    return hashlib.sha256(plan.url.encode()).hexdigest()


def _lineage(plan: _Plan, info: Any) -> dict[str, Any]:
    if plan.lineage is not None:
        try:
            return normalise_lineage(plan.lineage)
        except ValueError as exc:
            log.warning("%s: ignoring the model card's lineage (%s)", plan.what, exc)
    return lineage_from_gguf(info)


def _license(plan: _Plan, info: Any) -> dict[str, Any]:
    if plan.license is not None and plan.license.get("id"):
        return dict(plan.license)
    record = license_from_gguf(info)
    if plan.license is not None and plan.license.get("text"):
        record["text"] = plan.license["text"]
    return record


def pull_model(
    ref: str,
    store: ModelStore,
    settings: Settings,
    *,
    name: str | None = None,
    overwrite: bool = False,
    listener: PullListener | None = None,
    cancel: threading.Event | None = None,
    client: httpx.Client | None = None,
) -> Manifest:
    """Pull ``ref`` (see ``parse_ref``) into ``store`` as ``name`` (default: derived from the reference).

    A model already in the store under that name from the same file is left as it is. Another model under that
    name raises ``ModelExists`` unless ``overwrite`` (or unless it came from the same reference: a pull updates
    it). Raises ``LicenseDenied`` before any weights are fetched when the policy forbids the declared license,
    ``ModelNotFound`` for a repository, file or tag the hub does not have, ``DigestMismatch`` for a corrupt
    download, ``PullError`` for network trouble (one line naming the host and what to check; run the pull again:
    it resumes). Nothing is added to the store unless the whole pull succeeds."""
    parsed = parse_ref(ref)
    setting = _endpoint_setting(parsed)

    def emit(event: PullEvent) -> None:
        if listener is not None:
            listener(event)

    own_client = client is None
    http = client or http_client(settings.pull_timeout)
    try:
        emit(PullEvent("pulling manifest"))
        try:
            plan = _plan(parsed, settings, http, emit)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise network_error(exc, parsed.text or ref, setting) from exc
        target = parse_name(name or plan.name)
        existing = _existing(store, str(target))
        if existing is not None and plan.expected.sha256 == existing.blob.digest:
            log.info("%s is already up to date (%s)", target, existing.blob.digest)
            emit(PullEvent("success"))
            return existing
        if (
            existing is not None
            and not overwrite
            and existing.source.split("@")[0] != plan.source.split("@")[0]
        ):
            raise ModelExists(
                f"model {target} already exists (from {existing.source or 'elsewhere'}); choose another name with "
                f"--name or replace it with --force"
            )
        _check_declared(plan, str(target), store.policy)
        fetch = _fetch_folder_and_add if plan.folder else _fetch_and_add
        try:
            manifest = fetch(plan, target, store, http, emit, cancel, setting)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise network_error(exc, plan.what, setting) from exc
    finally:
        if own_client:
            http.close()
    emit(PullEvent("success"))
    return manifest


def _check_declared(plan: _Plan, name: str, policy: dict[str, Any]) -> None:
    """The policy check before any weights are fetched, on what the card / registry declares."""
    from kaiyuan.license import enforce_policy

    declared = {k: v for k, v in (plan.license or {"source": "none"}).items() if k != "text"}
    model = {"name": name, "license": declared, "lineage": plan.lineage or {}}
    enforce_policy(model, policy, "pull")


def _fetch_folder_and_add(
    plan: _Plan,
    target: Any,
    store: ModelStore,
    http: httpx.Client,
    emit: PullListener,
    cancel: threading.Event | None,
    setting: str,
) -> Manifest:
    assert plan.url_of is not None
    organization = plan.what.split("://", 1)[1].split("/", 1)[0]

    def add(folder: Path) -> Manifest:
        return store.import_hf_folder(
            folder,
            str(target),
            license=plan.license,
            lineage=normalise_lineage(plan.lineage) if plan.lineage else None,
            source=plan.source,
            overwrite=True,  # pull_model refused a name taken by another model before anything was fetched
            extra={"organization": organization, "repo_url": plan.what},
            move=True,
            action="pull",
        )

    return fetch_folder(
        store,
        http,
        plan.folder,
        plan.url_of,
        key=plan.source,
        what=plan.what,
        headers=plan.headers,
        emit=lambda status, digest, total, done: emit(PullEvent(status, digest, total, done)),
        cancel=cancel,
        setting=setting,
        add=add,
    )


def _fetch_and_add(
    plan: _Plan,
    target: Any,
    store: ModelStore,
    http: httpx.Client,
    emit: PullListener,
    cancel: threading.Event | None,
    setting: str,
) -> Manifest:
    part = store.partial_dir / f".partial-pull-{_partial_key(plan)}"
    lock = FileLock(str(part) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise PullError(
            f"{plan.what} is being pulled by another kaiyuan process; wait for it to finish"
        ) from exc
    try:
        size = plan.expected.size
        have = part.stat().st_size if part.exists() else 0
        if size is not None and free_bytes(store.root) < size - have:
            raise StoreError(
                f"not enough disk space in {store.root} for {plan.what} ({size} bytes); free some space"
            )
        digest_label = plan.expected.sha256.removeprefix("sha256-") if plan.expected.sha256 else None
        status = f"pulling {digest_label[:12]}" if digest_label else f"pulling {plan.what.rsplit('/', 1)[-1]}"
        wire = f"sha256:{digest_label}" if digest_label else None

        def on_bytes(done: int, total: int) -> None:
            emit(PullEvent(status, wire, total or None, done))

        digest = download(
            http,
            plan.url,
            part,
            expected=plan.expected,
            what=plan.what,
            headers=plan.headers,
            progress=on_bytes,
            cancel=cancel,
            setting=setting,
        )
        emit(PullEvent("verifying sha256 digest"))
        try:
            info = store._check_model_file(part, shown=Path(plan.what.rsplit("/", 1)[-1]))
        except InvalidModelFile:
            part.unlink(missing_ok=True)
            raise
        manifest = Manifest(
            name=target.name,
            tag=target.tag,
            blob=BlobRef(digest, info.file_size),
            license=_license(plan, info),
            lineage=_lineage(plan, info),
            source=plan.source,
            system=plan.system,
            parameters_defaults=dict(plan.parameters),
            **gguf_facts(info),
        )
        if info.chat_template is None:
            log.warning("%s has no chat template; kaiyuan will use its ChatML fallback", plan.what)
        try:
            _check_policy(manifest, store.policy, action="pull")
        except KaiyuanError:
            part.unlink(missing_ok=True)
            raise
        emit(PullEvent("writing manifest"))
        store.add_blob(part, expected_digest=digest, move=True)
        written = dataclasses.replace(manifest)
        store.write_manifest(written)  # last: until now nothing lists the model
        return written
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            Path(str(part) + ".lock").unlink()
