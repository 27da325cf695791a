"""What a GGUF file says about a model, in manifest form: facts, license record as found, lineage.

Owns: mapping ``general.*`` / ``<arch>.*`` / ``tokenizer.*`` keys to manifest fields. Must not know: files, locks,
policy. The license record is raw (no interpretation: that is ``kaiyuan.license``'s job).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from kaiyuan.gguf import GGUFInfo

__all__ = ["gguf_facts", "license_from_gguf", "lineage_from_gguf", "normalise_lineage", "template_digest"]

_BASE_KEY = re.compile(r"general\.base_model\.(\d+)\.([a-z_]+)")
_DATASET_KEY = re.compile(r"general\.dataset\.(\d+)\.([a-z_]+)")
_RELATIONS = (None, "finetune", "adapter", "merge", "quantized", "distilled", "converted")


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def template_digest(template: str | None) -> str | None:
    if template is None:
        return None
    return "sha256-" + hashlib.sha256(template.encode("utf-8")).hexdigest()


def license_from_gguf(info: GGUFInfo) -> dict[str, Any]:
    """``general.license`` / ``.name`` / ``.link`` exactly as written (None where absent), plus ``source``."""
    return {
        "id": _text(info.get("general.license")),
        "name": _text(info.get("general.license.name")),
        "link": _text(info.get("general.license.link")),
        "source": "gguf",
    }


def _indexed(info: GGUFInfo, pattern: re.Pattern[str]) -> list[dict[str, str]]:
    """``general.<kind>.<i>.<field>`` string keys grouped by index (the file's ``.count`` is not trusted)."""
    groups: dict[int, dict[str, str]] = {}
    for key, value in info.metadata.items():
        match = pattern.fullmatch(key)
        text = _text(value)
        if match and text is not None:
            groups.setdefault(int(match.group(1)), {})[match.group(2)] = text
    return [groups[i] for i in sorted(groups)]


def lineage_from_gguf(info: GGUFInfo) -> dict[str, Any]:
    """Base models and datasets from ``general.base_model.*`` / ``general.dataset.*``.

    GGUF does not record how a model relates to its bases, so the relation is inferred the way the Hugging Face
    Hub does when a card names ``base_model`` without ``base_model_relation``: an adapter file is "adapter", one
    base is "finetune", several are "merge"; no base means an original (None).
    """
    bases = [
        {key: base.get(key) for key in ("name", "organization", "repo_url", "version")}
        | {k: v for k, v in base.items() if k not in ("name", "organization", "repo_url", "version")}
        for base in _indexed(info, _BASE_KEY)
    ]
    datasets = [d.get("repo_url") or d.get("url") or d.get("name") for d in _indexed(info, _DATASET_KEY)]
    relation: str | None = None
    if info.kind == "adapter":
        relation = "adapter"
    elif len(bases) == 1:
        relation = "finetune"
    elif bases:
        relation = "merge"
    return {"relation": relation, "base_models": bases, "datasets": [d for d in datasets if d]}


def normalise_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """A caller's lineage with the three required keys; raises ValueError for an unknown relation."""
    relation = lineage.get("relation")
    if relation not in _RELATIONS:
        raise ValueError(
            f"lineage relation {relation!r} is not one of {', '.join(str(r) for r in _RELATIONS)}"
        )
    result = dict(lineage)
    result["relation"] = relation
    result["base_models"] = list(lineage.get("base_models") or [])
    result["datasets"] = list(lineage.get("datasets") or [])
    return result


def gguf_facts(info: GGUFInfo) -> dict[str, Any]:
    """Manifest fields that come from the file itself (not blob, name, license, lineage or source)."""
    return {
        "architecture": info.architecture or "",
        "parameters": info.parameter_count,
        "quantization": info.quantization or "",
        "context_length": info.context_length or 0,
        "chat_template_digest": template_digest(info.chat_template),
        "display_name": _text(info.get("general.name")),
        "basename": _text(info.get("general.basename")),
        "organization": _text(info.get("general.organization")),
        "repo_url": _text(info.get("general.repo_url")) or _text(info.get("general.source.repo_url")),
    }
