"""Where a run meets the store and the license guard: resolving BASE, the derivative's license and lineage record,
the policy check that must pass before training, and registering the finished adapter as store model NEW.

Owns the shape of the adapter's lineage (relation ``adapter``, the base by name and digest, the datasets by path
and digest) and the rule that the adapter inherits the base's license terms. The store and license packages own
their own meaning; this module only calls their public functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaiyuan.config import Settings
from kaiyuan.errors import ModelExists, ModelNotFound, TuneError

__all__ = [
    "BaseRef",
    "check_policy",
    "derivative_record",
    "ensure_name_free",
    "register_adapter",
    "resolve_base",
]


@dataclass
class BaseRef:
    """The base model of a run, as the store knows it."""

    name: str  # full store name (name:tag)
    path: Path  # GGUF file (or HF-layout folder) to load
    digest: str  # sha256-<hex> of the model file, as recorded by the store
    record: dict[str, Any] = field(default_factory=dict)  # manifest-shaped dict: license, lineage, ...
    parent: dict[str, Any] = field(
        default_factory=dict
    )  # how the adapter's lineage names it (Manifest.parent_ref)


def resolve_base(settings: Settings, name: str) -> BaseRef:
    """Look BASE up in the store (raises ModelNotFound with suggestions)."""
    from kaiyuan.store import ModelStore

    manifest = ModelStore(settings.home).resolve(name)
    if manifest.adapters:
        raise TuneError(
            f"{manifest.full_name} is itself an adapter model; tune its base {manifest.base} instead"
        )
    record = dict(manifest.to_dict())
    record["name"] = manifest.full_name
    return BaseRef(
        name=manifest.full_name,
        path=Path(manifest.model_path),
        digest=manifest.blob.digest,
        record=record,
        parent=manifest.parent_ref(),
    )


def ensure_name_free(settings: Settings, name: str) -> None:
    """Refuse to start a run whose result could not be registered."""
    from kaiyuan.store import ModelStore

    try:
        existing = ModelStore(settings.home).resolve(name)
    except ModelNotFound:
        return
    raise ModelExists(
        f"a model named {existing.full_name} already exists; pick another --name or remove it (`kaiyuan rm`)"
    )


def derivative_record(base: BaseRef, name: str, datasets: list[dict[str, str]]) -> dict[str, Any]:
    """The manifest-shaped record of the adapter: license inherited from BASE, lineage relation ``adapter``."""
    from kaiyuan.license import derivative

    record = derivative(name, [base.parent], "adapter", datasets=[d["path"] for d in datasets])
    record["lineage"]["dataset_digests"] = {d["path"]: d["digest"] for d in datasets}
    return record


def check_policy(settings: Settings, derivative: dict[str, Any]) -> dict[str, Any]:
    """Raise LicenseDenied when the policy forbids creating this derivative; returns its effective terms."""
    from kaiyuan.license import derive_terms, enforce_policy

    enforce_policy(derivative, settings.policy, "tune")
    terms = derive_terms(derivative["lineage"]["base_models"], "adapter")
    return dict(terms.to_json())


def register_adapter(
    settings: Settings, name: str, base: BaseRef, adapter_gguf: Path, derivative: dict[str, Any]
) -> str:
    """Add the finished adapter to the store as model ``name`` (base + GGUF LoRA); returns its full name."""
    from kaiyuan.store import ModelStore

    manifest = ModelStore(settings.home).add_adapter_model(
        name,
        base.name,
        adapter_gguf,
        lineage=derivative["lineage"],
        license=derivative["license"],
    )
    return str(manifest.full_name)
