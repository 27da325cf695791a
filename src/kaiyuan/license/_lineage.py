"""Lineage: which models a model was derived from, and under which licenses, resolved offline.

Owns walking a model's declared parents (manifest ``lineage.base_models``, GGUF ``general.base_model.N.*``, card
``base_model``) up through the store (through an optional resolver callback the caller passes) and the catalog's
table of well-known base models, and recognising a model itself in that table (by repository id, a redistribution's
repository name, its GGUF name or its store name) so that a known model carries its table lineage when its card or
file leaves it out. A parent found nowhere is ``unknown`` and stays unknown. Nothing here reads files or the
network.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.license._catalog import BaseModelEntry, Catalog, normalise_repo
from kaiyuan.license._record import Confidence, LicenseRecord, identify, record_from_value

__all__ = [
    "KnownModel",
    "LineageNode",
    "Resolver",
    "recognise_model",
    "resolve_lineage",
    "table_entry_for_model",
]

# A resolver maps a parent reference ({name, organization, repo_url, version}) to a store manifest, or None.
Resolver = Callable[[dict[str, Any]], dict[str, Any] | None]

_MAX_DEPTH = 8


@dataclass
class LineageNode:
    """One ancestor of a model."""

    name: str  # repository id when known, else the declared name
    relation: str  # how the child was made from it: finetune | adapter | merge | quantized | distilled
    license: LicenseRecord
    depth: int  # 1 = direct parent
    child: str  # name of the model derived from this one
    source: str  # manifest | store | table | none: where the parent's license came from
    repo: str | None = None
    territory_excluded: tuple[str, ...] = ()  # extra exclusions recorded for this model in the table
    open_components: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": self.repo,
            "relation": self.relation,
            "license": self.license.id,
            "license_name": self.license.name,
            "source": self.source,
            "depth": self.depth,
            "child": self.child,
            "territory_excluded": list(self.territory_excluded),
            "notes": list(self.notes),
        }


def _ref_repo(ref: dict[str, Any]) -> str | None:
    for key in ("repo_url", "repo", "url", "id"):
        value = ref.get(key)
        if isinstance(value, str):
            norm = normalise_repo(value)
            if norm:
                return norm
    name = ref.get("name")
    if isinstance(name, str) and "/" in name:
        return normalise_repo(name)
    return None


def table_entry_for_ref(ref: dict[str, Any], catalog: Catalog) -> BaseModelEntry | None:
    """The well-known table entry a parent reference points at: by repo id/URL, else by unambiguous name."""
    repo = _ref_repo(ref)
    if repo:
        found = catalog.base_model(repo)
        if found:
            return found
    name = ref.get("name")
    if isinstance(name, str) and name.strip():
        org = ref.get("organization") if isinstance(ref.get("organization"), str) else None
        label = name.split("/")[-1]
        return catalog.base_model_by_name(label, org)
    return None


# Suffixes a redistributor adds to the original repository's name (bartowski/…-GGUF, …-AWQ, mlx-community/…-4bit).
_REDISTRIBUTION_SUFFIX = re.compile(
    r"(?:[-_.](?:gguf|ggml|awq|gptq|exl2|mlx|fp8|fp16|bf16|int4|int8|[2-8]bit|bnb[-_]?4bit|imatrix|i1))+$",
    re.I,
)


@dataclass(frozen=True)
class KnownModel:
    """A model recognised in kaiyuan's table of well-known models, with how sure the match is and why."""

    entry: BaseModelEntry
    confidence: Confidence
    reason: str  # "its repository id deepseek-ai/…", "its repository name …-GGUF (a redistribution)", …


def _repo_of(model: dict[str, Any]) -> str | None:
    repo = model.get("repo_url") or model.get("repo")
    source = model.get("source")
    if not repo and isinstance(source, dict):
        repo = source.get("repo") or source.get("url")
    if not repo and isinstance(source, str) and source.split("://", 1)[0] in ("hf", "ms"):
        parts = source.split("://", 1)[1].split("/")
        repo = "/".join(parts[:2]) if len(parts) >= 2 else None
    return normalise_repo(repo) if isinstance(repo, str) else None


def _original_name(name: str) -> str:
    """A repository or model name without a redistributor's suffix: ``DeepSeek-R1-Distill-Llama-8B-GGUF`` →
    ``DeepSeek-R1-Distill-Llama-8B``."""
    return _REDISTRIBUTION_SUFFIX.sub("", name.strip())


def recognise_model(model: dict[str, Any], catalog: Catalog) -> KnownModel | None:
    """The well-known model ``model`` is, when kaiyuan can tell: by its repository id (``repo_url`` / ``repo`` /
    an ``hf://`` or ``ms://`` source; confidence high), by that repository's name without a redistributor's
    suffix such as ``-GGUF`` (medium), by its GGUF display name or basename and size label (medium), or by its
    store name (``deepseek-r1-distill-llama-8b:q4_k_m``; low). A name must match one entry only."""
    repo = _repo_of(model)
    if repo:
        found = catalog.base_model(repo)
        if found:
            return KnownModel(found, "high", f"its repository id {repo}")
        name = repo.partition("/")[2]
        found = catalog.base_model_by_name(_original_name(name))
        if found:
            return KnownModel(
                found, "medium", f"its repository name {repo} (a redistribution of {found.repo})"
            )
    org_name = model.get("organization") if isinstance(model.get("organization"), str) else None
    labels = [model.get("display_name")]
    basename, size = model.get("basename"), model.get("size_label")
    if isinstance(basename, str) and isinstance(size, str):
        labels.append(f"{basename} {size}")  # general.basename + general.size_label: "smollm2" "135M"
    for label in labels:
        if isinstance(label, str) and label.strip():
            found = catalog.base_model_by_name(label, org_name)
            if found:
                return KnownModel(found, "medium", f"its model file's name {label!r}")
    store_name = model.get("name")
    if isinstance(store_name, str) and store_name.strip():
        base, _, tag = store_name.rpartition(":") if ":" in store_name else (store_name, "", "")
        last = _original_name(base.rsplit("/", 1)[-1])
        for label in (last, f"{last}-{tag}" if tag else ""):
            found = catalog.base_model_by_name(label) if label else None
            if found:
                return KnownModel(found, "low", f"its name {store_name!r}")
    return None


def table_entry_for_model(model: dict[str, Any], catalog: Catalog) -> BaseModelEntry | None:
    """The table entry for the model itself (see ``recognise_model``)."""
    known = recognise_model(model, catalog)
    return known.entry if known else None


def _parents_of(model: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    lineage = model.get("lineage") or {}
    if not isinstance(lineage, dict):
        return None, []
    relation = lineage.get("relation") if isinstance(lineage.get("relation"), str) else None
    bases = [b for b in lineage.get("base_models") or [] if isinstance(b, dict)]
    return relation, bases


def resolve_lineage(
    model: dict[str, Any],
    *,
    catalog: Catalog,
    resolver: Resolver | None = None,
) -> list[LineageNode]:
    """Every ancestor of ``model``, breadth first, each with its identified license.

    Parents come from the model's own ``lineage.base_models``; when it declares none but the model itself is in
    the well-known table (e.g. a DeepSeek-R1 distill), the table's parents are used.
    """
    nodes: list[LineageNode] = []
    seen: set[str] = set()
    own_name = str(model.get("name") or "model")
    relation, bases = _parents_of(model)
    queue: list[tuple[dict[str, Any], str, str, int]] = []
    queue.extend((b, b.get("relation") or relation or "finetune", own_name, 1) for b in bases)
    own = table_entry_for_model(model, catalog)
    declared = [table_entry_for_ref(b, catalog) for b in bases]
    if own is not None and own not in declared:
        # A known model carries its table lineage even when its card or file leaves it out (the R1 distills'
        # cards say MIT and name no Llama / Qwen base); a redistribution that names the original as its base gets
        # the lineage through it instead.
        seen.add(own.repo.lower())
        named = {d.repo.lower() for d in declared if d is not None}
        queue.extend(
            ({"repo_url": p.repo}, p.relation, own_name, 1)
            for p in own.base_models
            if p.repo.lower() not in named
        )
    while queue:
        ref, rel, child, depth = queue.pop(0)
        node, grand = _resolve_one(ref, rel, child, depth, catalog, resolver)
        key = (node.repo or node.name).lower()
        if key in seen:
            continue
        seen.add(key)
        nodes.append(node)
        if depth < _MAX_DEPTH:
            queue.extend((g, g_rel, node.name, depth + 1) for g, g_rel in grand)
    return nodes


def _resolve_one(
    ref: dict[str, Any],
    relation: str,
    child: str,
    depth: int,
    catalog: Catalog,
    resolver: Resolver | None,
) -> tuple[LineageNode, list[tuple[dict[str, Any], str]]]:
    repo = _ref_repo(ref)
    display = repo or str(ref.get("name") or "unknown")
    # 1. the manifest carries the parent's license itself (tune/export write it)
    if ref.get("license"):
        record = record_from_value(ref["license"], source="manifest", catalog=catalog)
        grand_rel, grand = _parents_of(ref)
        node = LineageNode(display, relation, record, depth, child, "manifest", repo)
        table = table_entry_for_ref(ref, catalog)
        if table is not None:
            node.territory_excluded = table.territory_excluded
            node.open_components = table.open_components
            if not grand:
                grand = [{"repo_url": p.repo, "relation": p.relation} for p in table.base_models]
        return node, [(g, g.get("relation") or grand_rel or "finetune") for g in grand]
    # 2. the store knows it (a model the user imported or created)
    if resolver is not None:
        stored = resolver(ref)
        if stored:
            from kaiyuan.license._detect import license_record_of

            record = license_record_of(stored)
            record.source = "store"
            grand_rel, grand = _parents_of(stored)
            name = str(stored.get("name") or display)
            node = LineageNode(name, relation, record, depth, child, "store", repo)
            return node, [(g, g.get("relation") or grand_rel or "finetune") for g in grand]
    # 3. the table of well-known base models
    table = table_entry_for_ref(ref, catalog)
    if table is not None:
        record = identify(table.license, source="table", catalog=catalog)
        node = LineageNode(
            table.repo,
            relation,
            record,
            depth,
            child,
            "table",
            table.repo,
            territory_excluded=table.territory_excluded,
            open_components=table.open_components,
            notes=[table.note] if table.note else [],
        )
        return node, [({"repo_url": p.repo}, p.relation) for p in table.base_models]
    # 4. nowhere: unknown, never guessed
    record = LicenseRecord.unknown(
        "none", None, f"base model {display} is neither in the store nor in kaiyuan's table"
    )
    return LineageNode(display, relation, record, depth, child, "none", repo), []
