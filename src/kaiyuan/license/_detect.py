"""Detecting a model's declared license and lineage from files: a GGUF, a model card, or a model folder.

Owns turning GGUF metadata (``general.license*``, ``general.base_model.N.*``, ``general.dataset.N.*``), Hugging Face
card front matter (``license``, ``license_name``, ``license_link``, ``base_model``, ``base_model_relation``,
``datasets``), a Hugging Face folder's ``config.json`` (a ``license`` key, where a model sets one) and LICENSE files
next to a model into the manifest-shaped dict that ``evaluate`` reads, so a model can be judged before it is
imported. It reads files; it does not decide what the license allows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from kaiyuan.errors import InvalidModelFile
from kaiyuan.license._catalog import normalise_repo
from kaiyuan.license._record import LicenseRecord, identify, identify_text

__all__ = [
    "detect_from_path",
    "model_from_card",
    "model_from_gguf_metadata",
    "parse_card",
    "read_gguf_metadata",
]

_CARD_NAMES = ("README.md", "readme.md", "MODEL_CARD.md", "model_card.md")
_MAX_TEXT = 512 * 1024  # bytes read from a LICENSE file or card; license texts are far smaller
RELATIONS = ("finetune", "adapter", "merge", "quantized", "distilled")


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file, read by ``kaiyuan.gguf``'s bounds-checked reader.

    Long arrays (the vocabulary) are left unread. Raises InvalidModelFile for a file that is not a readable GGUF.
    """
    from kaiyuan.gguf import read_gguf

    return dict(read_gguf(Path(path)).metadata)


def _str(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _indexed(meta: dict[str, Any], kind: str) -> list[dict[str, str]]:
    """``general.<kind>.<i>.<field>`` string values grouped by index; the file's ``.count`` is not trusted."""
    pattern = re.compile(rf"general\.{kind}\.(\d+)\.([a-z_]+)")
    groups: dict[int, dict[str, str]] = {}
    for key, value in meta.items():
        match = pattern.fullmatch(key)
        text = _str(value)
        if match and text is not None:
            groups.setdefault(int(match.group(1)), {})[match.group(2)] = text
    return [groups[i] for i in sorted(groups)]


def model_from_gguf_metadata(meta: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """A manifest-shaped model dict from GGUF metadata keys (``general.*``)."""
    bases = [
        {k: v for k, v in base.items() if k in ("name", "organization", "repo_url", "version")}
        for base in _indexed(meta, "base_model")
    ]
    datasets: list[str] = []
    for ds in _indexed(meta, "dataset"):
        value = ds.get("repo_url") or ds.get("name")
        if value:
            datasets.append(normalise_repo(value) or value)
    relation = None
    if _str(meta.get("general.type")) == "adapter":
        relation = "adapter"
    elif bases:
        relation = "merge" if len(bases) > 1 else "finetune"
    tags = meta.get("general.tags")
    return {
        "name": name or _str(meta.get("general.name")) or "",
        "display_name": _str(meta.get("general.name")),
        "basename": _str(meta.get("general.basename")),
        "size_label": _str(meta.get("general.size_label")),
        "organization": _str(meta.get("general.organization")),
        "repo_url": _str(meta.get("general.repo_url")) or _str(meta.get("general.source.repo_url")),
        "license": {
            "id": _str(meta.get("general.license")),
            "name": _str(meta.get("general.license.name")),
            "link": _str(meta.get("general.license.link")),
            "source": "gguf",
        },
        "lineage": {"relation": relation, "base_models": bases, "datasets": datasets},
        "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
    }


def parse_card(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card (``---`` ... ``---`` at the top); {} when there is none."""
    stripped = text.lstrip("\ufeff")
    lines = stripped.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        raise InvalidModelFile(
            "model card front matter is not closed by a '---' line; fix the README's YAML header"
        )
    import yaml

    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        raise InvalidModelFile(f"model card front matter is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidModelFile("model card front matter must be a YAML mapping (key: value lines)")
    return data


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def model_from_card(card: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """A manifest-shaped model dict from model card front matter."""
    license_value = card.get("license")
    if isinstance(license_value, list):  # some cards list several; the first is the model's
        license_value = next((v for v in license_value if isinstance(v, str)), None)
    bases = [{"repo_url": b, "name": b.split("/")[-1]} for b in _list(card.get("base_model"))]
    relation = card.get("base_model_relation")
    if not isinstance(relation, str) or relation not in RELATIONS:
        relation = ("merge" if len(bases) > 1 else "finetune") if bases else None
    return {
        "name": name or (card.get("model_name") if isinstance(card.get("model_name"), str) else "") or "",
        "license": {
            "id": license_value if isinstance(license_value, str) else None,
            "name": card.get("license_name") if isinstance(card.get("license_name"), str) else None,
            "link": card.get("license_link") if isinstance(card.get("license_link"), str) else None,
            "source": "card",
        },
        "lineage": {"relation": relation, "base_models": bases, "datasets": _list(card.get("datasets"))},
        "tags": _list(card.get("tags")),
    }


def _read_text(path: Path) -> str:
    with path.open("rb") as fh:
        return fh.read(_MAX_TEXT).decode("utf-8", "replace")


def _license_files(folder: Path) -> list[Path]:
    found = []
    for child in sorted(folder.iterdir()):
        lower = child.name.lower()
        if not child.is_file() or lower.endswith((".pdf", ".gguf", ".safetensors", ".bin", ".json")):
            continue
        if (
            lower.startswith(("license", "licence", "model_license", "license-model", "notice"))
            or "license" in lower
        ):
            found.append(child)
    return found


def _merge_detections(
    folder: Path, parts: list[dict[str, Any]], text_record: LicenseRecord | None
) -> dict[str, Any]:
    """One model dict from a folder's card, GGUF and LICENSE file: the card wins, then GGUF, then the text."""
    model: dict[str, Any] = {"name": folder.name, "license": None, "lineage": {}, "tags": []}
    for part in parts:  # ordered by precedence, best first
        declared = part.get("license") or {}
        if model["license"] is None and any(declared.get(k) for k in ("id", "name", "link")):
            model["license"] = declared
        if not model["lineage"].get("base_models") and part["lineage"].get("base_models"):
            model["lineage"] = part["lineage"]
        for key in ("repo_url", "organization", "display_name", "basename", "size_label"):
            if part.get(key) and not model.get(key):
                model[key] = part[key]
        model["tags"] = model["tags"] or part.get("tags", [])
    if text_record is not None and text_record.known:
        model["license_text"] = {"id": text_record.id, "confidence": text_record.confidence}
        if model["license"] is None:
            model["license"] = {
                "id": text_record.id,
                "source": "license_file",
                "confidence": text_record.confidence,
            }
    if model["license"] is None:
        model["license"] = {"source": "none"}
    return model


def detect_from_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A manifest-shaped model dict for a GGUF file, a model card (README.md) or a model folder.

    The result has ``name``, ``license`` (declared id/name/link and ``source``), ``lineage`` (relation,
    base_models, datasets), and, when a LICENSE file was fingerprinted, ``license_text`` (id, confidence).
    Raises ``InvalidModelFile`` for a missing path, a bad GGUF or card, or a folder with nothing kaiyuan can read.
    """
    target = Path(path)
    if not target.exists():
        raise InvalidModelFile(f"{target}: no such file or folder")
    if target.is_file():
        if target.suffix.lower() == ".gguf" or _is_gguf(target):
            model = model_from_gguf_metadata(read_gguf_metadata(target), name=None)
            model["name"] = model["name"] or target.stem
            model["files"] = [str(target)]
            return model
        text = _read_text(target)
        card = parse_card(text)
        if card:
            model = model_from_card(card, name=target.parent.name)
            model["card"] = True
            return model
        record = identify_text(text)
        model = {"name": target.parent.name, "license": {"source": "none"}, "lineage": {}}
        if record.known:
            model["license"] = {"id": record.id, "source": "license_file", "confidence": record.confidence}
        return model
    parts: list[dict[str, Any]] = []
    card_found = False
    for card_name in _CARD_NAMES:
        card_path = target / card_name
        if card_path.is_file():
            card = parse_card(_read_text(card_path))
            if card:
                parts.append(model_from_card(card, name=target.name))
                card_found = True
            break
    ggufs = sorted(target.glob("*.gguf"))
    for gguf_path in ggufs[:1]:
        parts.append(model_from_gguf_metadata(read_gguf_metadata(gguf_path)))
    config = _config_model(target / "config.json")
    if config is not None:
        parts.append(config)
    text_record = None
    for lic in _license_files(target):
        candidate = identify_text(_read_text(lic))
        if candidate.known:
            text_record = candidate
            break
    if not parts and text_record is None and not ggufs:
        raise InvalidModelFile(
            f"{target}: no model card (README.md with YAML front matter), config.json, GGUF file or LICENSE "
            "file found"
        )
    model = _merge_detections(target, parts, text_record)
    model["card"] = card_found
    model["files"] = [str(p) for p in ggufs]
    return model


def _config_model(path: Path) -> dict[str, Any] | None:
    """What a Hugging Face ``config.json`` declares: a ``license`` (few models set one), never lineage.
    None when there is no such file; a config that is not JSON declares nothing."""
    if not path.is_file():
        return None
    import json

    try:
        config = json.loads(_read_text(path))
    except ValueError:
        return {"license": None, "lineage": {}}
    declared = config.get("license") if isinstance(config, dict) else None
    license_value = (
        {"id": declared, "source": "config.json"} if isinstance(declared, str) and declared else None
    )
    return {"license": license_value, "lineage": {}}


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"GGUF"


def license_record_of(model: dict[str, Any]) -> LicenseRecord:
    """The identified license of a manifest-shaped model dict, checked against its LICENSE text if one was read."""
    from kaiyuan.license._record import record_from_value

    declared = model.get("license")
    record = (
        record_from_value(declared, source="manifest") if declared is not None else LicenseRecord.unknown()
    )
    confidence = declared.get("confidence") if isinstance(declared, dict) else None
    if record.known and confidence in ("high", "medium", "low") and record.source == "license_file":
        record.confidence = confidence
    text = model.get("license_text")
    if isinstance(text, dict) and text.get("id") and record.source != "license_file":
        if record.known and text["id"] != record.id:
            record.confidence = "low"
            record.notes.append(
                f"the LICENSE file reads as {text['id']} but the model declares {record.id}; both are applied"
            )
        elif not record.known:
            fallback = identify(text["id"], source="license_file")
            fallback.confidence = text.get("confidence", "medium")
            fallback.notes = record.notes + fallback.notes
            return fallback
    return record
