"""Model names, Ollama style: ``name[:tag]``, where ``name`` may have ``/``-separated parts (``hf.co/org/repo``).

Owns: parsing, validation and normalisation of names (lowercase; default tag ``latest``) and where a name's
manifest lives on disk. Must not know: manifests' content, blobs, files other than their path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kaiyuan.errors import InvalidRequest

__all__ = ["DEFAULT_TAG", "ModelName", "parse_name"]

DEFAULT_TAG = "latest"

_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
_TAG = re.compile(r"[a-z0-9_][a-z0-9._-]{0,127}")
_MAX_NAME = 200
_RULES = (
    "a name is parts separated by '/', each starting with a letter or digit and then letters, digits, "
    "'.', '-' or '_'; an optional ':tag' uses the same characters (e.g. smollm2:135m, hf.co/org/model:q4_k_m)"
)


@dataclass(frozen=True, order=True)
class ModelName:
    """A normalised model name and tag."""

    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    def manifest_path(self, manifests_dir: Path) -> Path:
        """``manifests/<name parts...>/<tag>.json``."""
        return manifests_dir.joinpath(*self.name.split("/"), f"{self.tag}.json")

    @classmethod
    def from_manifest_path(cls, path: Path, manifests_dir: Path) -> ModelName:
        relative = path.relative_to(manifests_dir)
        return cls("/".join(relative.parent.parts), relative.stem)


def parse_name(text: str) -> ModelName:
    """``"SmolLM2"`` → ``smollm2:latest``; raises InvalidRequest naming the rule a bad name breaks."""
    raw = text.strip()
    lowered = raw.lower()
    last = lowered.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = lowered.rsplit(":", 1)
    else:
        name, tag = lowered, DEFAULT_TAG
    if not name:
        raise InvalidRequest(f"invalid model name {raw!r}: the name is empty; {_RULES}", param="model")
    if len(name) > _MAX_NAME:
        raise InvalidRequest(f"invalid model name {raw!r}: longer than {_MAX_NAME} characters", param="model")
    for part in name.split("/"):
        if not _PART.fullmatch(part):
            raise InvalidRequest(f"invalid model name {raw!r}: {_RULES}", param="model")
    if not _TAG.fullmatch(tag):
        raise InvalidRequest(f"invalid model tag {tag!r} in {raw!r}: {_RULES}", param="model")
    return ModelName(name, tag)
