"""Hugging Face model folders in the store: which files make one, what they say, and the folder view of its blobs.

A Hugging Face model (``config.json``, tokenizer files, ``*.safetensors`` shards, card, license) is stored as one
content-addressed blob per file plus a small *tree index* blob (``{"files": {relative path: digest}}``) whose digest
names the model, like an OCI manifest names an image. Engines want a folder, so the store materialises each tree
as ``models/trees/<tree digest>/`` of symbolic links to the blobs (hard links or copies where symbolic links cannot
be made), built in a hidden sibling and renamed into place: a reader sees the whole folder or none.

Owns: choosing and validating a folder's files (clear errors naming a missing ``config.json``, tokenizer or
weights), facts for the manifest (architecture, parameter count from the safetensors headers, dtype or
quantization method, context length, chat template digest), the chat template and BOS/EOS texts of a folder, the
tree index and the materialised folder. Must not know: locks, names, policy, HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kaiyuan.errors import InvalidModelFile, StoreError
from kaiyuan.store._facts import template_digest

__all__ = [
    "TREES_DIR",
    "FolderFile",
    "check_model_files",
    "folder_special_tokens",
    "hf_facts",
    "materialise_tree",
    "read_folder_config",
    "read_folder_template",
    "remove_tree",
    "safe_relative_path",
    "scan_folder",
    "tree_index",
    "wanted_file",
]

TREES_DIR = "trees"
# Weights in formats the store does not take (pickles, other frameworks) and files of other model formats.
_SKIPPED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".onnx_data", ".ot", ".gguf")
_TOKENIZER_FILES = (
    ("tokenizer.json",),
    ("tokenizer.model",),
    ("vocab.json", "merges.txt"),
    ("tiktoken.model",),
)
_MAX_HEADER = 100 * 1024 * 1024  # a safetensors JSON header larger than this is not a model we take
_MAX_JSON = 16 * 1024 * 1024
_DTYPE_LABELS = {"BF16": "BF16", "F16": "F16", "F32": "F32", "F8_E4M3": "FP8", "F8_E5M2": "FP8"}


@dataclass(frozen=True)
class FolderFile:
    """One file of a model folder: its path inside the folder (POSIX) and where it is on disk."""

    relative: str
    path: Path
    size: int


def safe_relative_path(text: str) -> str:
    """A folder-relative POSIX path that stays inside the folder, or InvalidModelFile."""
    path = PurePosixPath(text)
    if not text or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts) or "\\" in text:
        raise InvalidModelFile(f"refusing the file name {text!r}: it would leave the model folder")
    return str(path)


def wanted_file(relative: str) -> bool:
    """Whether a file of a model folder or repository belongs in the store (not hidden, not another format)."""
    parts = PurePosixPath(relative).parts
    return not any(part.startswith(".") for part in parts) and not relative.lower().endswith(
        _SKIPPED_SUFFIXES
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise InvalidModelFile(f"{path}: {what} is larger than {_MAX_JSON} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"{path}: {what} cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{path}: {what} is not a JSON object")
    return data


def scan_folder(folder: Path) -> list[FolderFile]:
    """The files of a Hugging Face model folder that the store keeps, after checking it is a model.

    Raises InvalidModelFile naming what is missing: ``config.json``, a tokenizer, or ``*.safetensors`` weights
    (all shards an index lists). Symbolic links are followed (a Hugging Face cache snapshot is made of them).
    """
    if not folder.is_dir():
        raise InvalidModelFile(f"{folder}: not a folder")
    files: list[FolderFile] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not wanted_file(relative) or not path.is_file():
            continue
        files.append(FolderFile(relative, path, path.stat().st_size))
    check_model_files(folder, {f.relative for f in files}, skipped=_skipped(folder))
    return files


def _skipped(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_SKIPPED_SUFFIXES)
    )


def check_model_files(where: Path | str, names: Iterable[str], *, skipped: Iterable[str] = ()) -> None:
    """InvalidModelFile unless ``names`` (folder-relative paths) hold a config, a tokenizer and safetensors."""
    present = set(names)
    hint = "a Hugging Face model folder needs config.json, tokenizer files and *.safetensors weights"
    if "config.json" not in present:
        raise InvalidModelFile(f"{where}: no config.json; {hint}")
    if not any(all(name in present for name in group) for group in _TOKENIZER_FILES):
        raise InvalidModelFile(
            f"{where}: no tokenizer (tokenizer.json, tokenizer.model, or vocab.json + merges.txt); {hint}"
        )
    if not any(name.endswith(".safetensors") for name in present):
        others = [name for name in skipped if not name.endswith(".gguf")]
        extra = (
            f" ({', '.join(others[:3])} is a pickle/other format kaiyuan does not load; convert it to safetensors)"
            if others
            else ""
        )
        raise InvalidModelFile(f"{where}: no *.safetensors weights{extra}; {hint}")


def check_shards(folder: Path) -> None:
    """Every shard ``model.safetensors.index.json`` lists must be in the folder."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return
    weight_map = _read_json(index, "the safetensors index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise InvalidModelFile(f"{index}: no weight_map")
    missing = sorted({str(v) for v in weight_map.values()} - {p.name for p in folder.glob("*.safetensors")})
    if missing:
        raise InvalidModelFile(
            f"{folder}: weight shards {', '.join(missing[:3])} listed in the index are missing"
        )


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, bounds-checked against the file's size."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InvalidModelFile(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(_MAX_HEADER, size - 8):
            raise InvalidModelFile(f"{path}: safetensors header length {length} does not fit the file")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise InvalidModelFile(f"{path}: safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise InvalidModelFile(f"{path}: safetensors header is not a JSON object")
    return header


def _weights_summary(files: Iterable[Path]) -> tuple[int, str]:
    """(parameter count, the dtype most parameters have) over the safetensors files."""
    total = 0
    by_dtype: dict[str, int] = {}
    for path in files:
        for name, entry in _safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise InvalidModelFile(f"{path}: tensor {name!r} has no valid shape")
            count = 1
            for n in shape:
                count *= n
            total += count
            dtype = str(entry.get("dtype", "?"))
            by_dtype[dtype] = by_dtype.get(dtype, 0) + count
    dominant = max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else ""
    return total, _DTYPE_LABELS.get(dominant, dominant)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def hf_facts(folder: Path) -> dict[str, Any]:
    """Manifest fields a model folder states about itself (``architecture``, ``parameters``, ``quantization``,
    ``context_length``, ``chat_template_digest``, ``display_name``)."""
    config = _read_json(folder / "config.json", "config.json")
    text_config = config.get("text_config")
    merged = {**config, **(text_config if isinstance(text_config, dict) else {})}
    architecture = _text(merged.get("model_type"))
    if architecture is None:
        names = config.get("architectures")
        architecture = _text(names[0]) if isinstance(names, list) and names else None
    if architecture is None:
        raise InvalidModelFile(f"{folder / 'config.json'}: neither model_type nor architectures is set")
    check_shards(folder)
    parameters, dtype = _weights_summary(sorted(folder.glob("*.safetensors")))
    quant = config.get("quantization_config")
    quantization = dtype
    if isinstance(quant, dict) and _text(quant.get("quant_method")):
        quantization = str(quant["quant_method"]).upper()
    context = merged.get("max_position_embeddings")
    return {
        "architecture": architecture,
        "parameters": parameters,
        "quantization": quantization,
        "context_length": context if isinstance(context, int) and context > 0 else 0,
        "chat_template_digest": template_digest(read_folder_template(folder)),
        "display_name": _text(config.get("_name_or_path")) or folder.name,
    }


def read_folder_config(folder: Path) -> dict[str, Any]:
    """A model folder's ``config.json`` (InvalidModelFile when it is missing or not a JSON object)."""
    return _read_json(folder / "config.json", "config.json")


def read_folder_template(folder: Path) -> str | None:
    """The chat template of a model folder: ``chat_template.jinja`` (transformers ≥ 4.50 writes it) or the
    ``chat_template`` of ``tokenizer_config.json`` (a string, or a list of named templates: the "default")."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    template = _read_json(config_file, "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def folder_special_tokens(folder: Path) -> tuple[str, str]:
    """The BOS/EOS texts (``bos_token``/``eos_token``) of ``tokenizer_config.json`` or ``special_tokens_map.json``."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            data = _read_json(path, name)
            bos, eos = _token_text(data.get("bos_token")), _token_text(data.get("eos_token"))
            if bos or eos:
                return bos, eos
    return "", ""


def tree_index(files: Mapping[str, str]) -> bytes:
    """The tree index blob's bytes: ``{"files": {relative path: digest}}``, sorted, so equal trees hash equal."""
    body = {"kaiyuan_tree": 1, "files": dict(sorted(files.items()))}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")


def materialise_tree(trees_root: Path, digest: str, files: Mapping[str, Path]) -> Path:
    """``trees_root/<digest>/``: each relative path a link to its blob file; built aside, renamed into place.
    An existing folder is kept when every file is there (another process made it)."""
    final = trees_root / digest
    if final.is_dir() and all((final / rel).exists() for rel in files):
        return final
    trees_root.mkdir(parents=True, exist_ok=True)
    partial = trees_root / f".partial-{uuid.uuid4().hex}"
    try:
        for relative, blob in files.items():
            target = partial / safe_relative_path(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(blob, target)
        if final.exists():
            shutil.rmtree(final)  # an incomplete folder from a crash: replace it
        os.replace(partial, final)
    except OSError as exc:
        raise StoreError(f"cannot lay out the model folder {final}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def _link(blob: Path, target: Path) -> None:
    try:
        target.symlink_to(blob.resolve())
        return
    except OSError:
        pass
    try:
        os.link(blob, target)
    except OSError:
        shutil.copyfile(blob, target)


def remove_tree(trees_root: Path, digest: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(trees_root / digest)
