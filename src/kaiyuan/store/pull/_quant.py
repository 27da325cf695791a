"""Choosing the GGUF file of a repository by quantization name (``Q4_K_M``) or file name.

Owns: reading the quantization label from a GGUF file name (``qwen2.5-0.5b-instruct-q4_k_m.gguf`` → ``Q4_K_M``,
``UD-Q4_K_XL``, ``IQ3_XXS``, ``BF16`` …), ignoring what is not a model (``mmproj`` vision projectors), refusing
split models, and the choice itself: an exact file, else the files whose label equals the request, else files
whose name holds it as a word; with no request, the only model file, else ``Q4_K_M`` (Ollama's default for
``hf.co`` pulls). Errors list what the repository has. Must not know HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kaiyuan.errors import InvalidRequest, ModelNotFound

__all__ = ["DEFAULT_QUANT", "RemoteFile", "choose_gguf", "quant_label"]

DEFAULT_QUANT = "Q4_K_M"

_QUANT = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|FP16|FP32|MXFP4(?:_MOE)?))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class RemoteFile:
    """A file in a hub repository: its path, size, and the digests the hub publishes for it."""

    path: str
    size: int | None = None
    sha256: str | None = None  # sha256-<hex> (LFS / ModelScope)
    git_sha1: str | None = None  # git blob id (small files on Hugging Face)

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def quant_label(path: str) -> str | None:
    """The quantization named in a GGUF file name (upper case), or None."""
    stem = path.rsplit("/", 1)[-1]
    stem = _SPLIT.sub(".gguf", stem)
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    matches = _QUANT.findall(stem)
    return matches[-1].upper() if matches else None


def _is_model(file: RemoteFile) -> bool:
    name = file.basename.lower()
    return name.endswith(".gguf") and "mmproj" not in name


def _labels(files: Sequence[RemoteFile]) -> str:
    labels = sorted({quant_label(f.path) or f.basename for f in files})
    return ", ".join(labels) or "none"


def _one(matches: list[RemoteFile], where: str, wanted: str) -> RemoteFile:
    splits = [f for f in matches if _SPLIT.search(f.basename)]
    whole = [f for f in matches if f not in splits]
    if len(whole) == 1:
        return whole[0]
    if not whole and splits:
        raise InvalidRequest(
            f"{where}: {wanted} is split into {len(splits)} files, which kaiyuan cannot load as one model; download "
            f"the parts and merge them (llama-gguf-split --merge FIRST-PART.gguf merged.gguf), then kaiyuan import",
            param="model",
        )
    paths = ", ".join(sorted(f.path for f in whole))
    raise InvalidRequest(
        f"{where}: {wanted} matches several files ({paths}); name one file: …:FILE.gguf", param="model"
    )


def choose_gguf(files: Sequence[RemoteFile], selector: str | None, where: str) -> RemoteFile:
    """The GGUF ``selector`` names (a quantization or a ``.gguf`` path) among ``files``."""
    models = [f for f in files if _is_model(f)]
    if not models:
        raise ModelNotFound(
            f"{where} has no GGUF model file; kaiyuan pulls GGUF models (look for a repository ending in -GGUF)"
        )
    if selector is not None and selector.lower().endswith(".gguf"):
        exact = [f for f in files if f.path == selector] or [f for f in files if f.basename == selector]
        if not exact:
            exact = [
                f
                for f in files
                if f.path.lower() == selector.lower() or f.basename.lower() == selector.lower()
            ]
        if not exact:
            raise ModelNotFound(
                f"{where} has no file {selector!r}; its GGUF files: {', '.join(sorted(f.path for f in models))}"
            )
        return _one(exact[:1], where, selector)
    wanted = (selector or DEFAULT_QUANT).upper()
    matches = [f for f in models if quant_label(f.path) == wanted]
    if not matches:
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(wanted)}(?![A-Za-z0-9])", re.IGNORECASE)
        matches = [f for f in models if word.search(f.path)]
    if matches:
        return _one(matches, where, wanted)
    if selector is None:
        whole = [f for f in models if not _SPLIT.search(f.basename)]
        if len(whole) == 1:
            return whole[0]
        raise InvalidRequest(
            f"{where} has several GGUF files and no {DEFAULT_QUANT}; choose a quantization with :QUANT "
            f"(available: {_labels(models)})",
            param="model",
        )
    raise ModelNotFound(f"{where} has no {wanted} GGUF; available quantizations: {_labels(models)}")
