"""Pull references: what ``kaiyuan pull REF`` and ``/api/pull`` accept, and the store name a pull gets by default.

Owns the grammar of references and the default names:

=========================================  ==========================================  ===========================
reference                                  meaning                                     default store name
=========================================  ==========================================  ===========================
``hf://ORG/REPO[:QUANT|:FILE.gguf][@REV]`` a GGUF of a Hugging Face repo               ``repo:quant`` (lowercase)
``hf.co/ORG/REPO[:QUANT]``                 the same, Ollama's spelling                 the reference, lowercase
``ms://ORG/REPO[:QUANT|:FILE.gguf][@REV]`` a GGUF of a ModelScope repo                 ``repo:quant`` (lowercase)
``modelscope.cn/ORG/REPO[:QUANT]``         the same, Ollama's spelling                 the reference, lowercase
``ollama://[REGISTRY/]NS/NAME[:TAG]``      an Ollama registry model (registry v2)      ``name:tag`` (``ns/name:tag``
                                                                                       outside ``library``)
``NAME[:TAG]``, ``NS/NAME[:TAG]``          the configured Ollama registry (``library``) as for ``ollama://``
=========================================  ==========================================  ===========================

Must not know HTTP or the store's files: it parses text only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kaiyuan.errors import InvalidRequest

__all__ = ["PullRef", "parse_ref", "sanitize_name_part"]

Hub = Literal["hf", "ms", "ollama"]

_HF_HOSTS = ("hf.co/", "huggingface.co/")
_MS_HOSTS = ("modelscope.cn/", "www.modelscope.cn/")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OLLAMA_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_REPO_SUFFIXES = ("-gguf", "_gguf", ".gguf")

_FORMS = (
    "hf://ORG/REPO[:QUANT|:FILE.gguf][@REVISION], ms://ORG/REPO[:QUANT|:FILE.gguf][@REVISION], "
    "ollama://[REGISTRY/]NAMESPACE/NAME[:TAG], hf.co/ORG/REPO[:QUANT] or an Ollama name such as llama3.2:1b"
)


@dataclass(frozen=True)
class PullRef:
    """A parsed pull reference."""

    hub: Hub
    repo: str  # "ORG/REPO" (hf, ms) or "NAMESPACE/NAME" (ollama)
    selector: str | None = None  # QUANT or FILE.gguf (hf, ms); the tag (ollama)
    revision: str | None = None  # branch, tag or commit (hf, ms)
    registry: str | None = None  # ollama: registry host named in the reference (None: the configured one)
    ollama_style: bool = (
        False  # written the way Ollama writes names (hf.co/…, bare names): keep it as the name
    )
    text: str = ""

    @property
    def is_file(self) -> bool:
        return self.selector is not None and self.selector.lower().endswith(".gguf")

    @property
    def tag(self) -> str:
        return self.selector or "latest"

    def default_name(self, quant: str | None = None) -> str:
        """The store name this pull gets unless ``--name`` says otherwise. ``quant`` is the quantization of the
        file the hub picked (for ``hf://``/``ms://`` references that named none)."""
        if self.hub == "ollama":
            namespace, name = self.repo.split("/", 1)
            base = name if namespace == "library" else self.repo
            return f"{base}:{self.tag}".lower()
        if self.ollama_style:
            host = "hf.co" if self.hub == "hf" else "modelscope.cn"
            return f"{host}/{self.repo}:{self.selector or 'latest'}".lower()
        repo_name = self.repo.split("/", 1)[1].lower()
        for suffix in _REPO_SUFFIXES:
            if repo_name.endswith(suffix) and len(repo_name) > len(suffix):
                repo_name = repo_name[: -len(suffix)]
                break
        tag = quant or (None if self.is_file else self.selector) or "latest"
        return f"{sanitize_name_part(repo_name)}:{sanitize_name_part(tag)}"


def sanitize_name_part(text: str) -> str:
    """Lowercase, characters a store name cannot hold replaced by ``-``, at most 80 characters."""
    cleaned = _UNSAFE.sub("-", text.lower()).strip("-._")
    return (cleaned or "model")[:80]


def _bad(text: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"cannot pull {text!r}: {why}; use {_FORMS}", param="model")


def _split_repo(text: str, rest: str, *, allow_revision: bool) -> tuple[str, str | None, str | None]:
    revision = None
    if allow_revision and "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            raise _bad(text, "the revision after '@' is empty")
    selector = None
    if ":" in rest:
        rest, _, selector = rest.partition(":")  # a file selector may hold '/' (a file in a folder)
        if not selector:
            raise _bad(text, "the quantization or file after ':' is empty")
    parts = rest.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) for p in parts):
        raise _bad(text, "the repository must be ORG/REPO")
    return "/".join(parts), selector, revision


def _hub_ref(hub: Hub, text: str, rest: str, *, ollama_style: bool) -> PullRef:
    repo, selector, revision = _split_repo(text, rest, allow_revision=not ollama_style)
    if selector is not None and not selector.lower().endswith(".gguf") and not _TAG.fullmatch(selector):
        raise _bad(text, f"{selector!r} is neither a quantization name (Q4_K_M) nor a .gguf file")
    return PullRef(hub, repo, selector, revision, ollama_style=ollama_style, text=text)


def _is_registry_host(part: str) -> bool:
    host = part.split(":", 1)[0]
    return "." in host or host == "localhost" or part.startswith("[")


def _ollama_ref(text: str, rest: str, *, ollama_style: bool) -> PullRef:
    parts = rest.split("/")
    registry = None
    if len(parts) > 1 and _is_registry_host(parts[0]):
        registry = parts.pop(0)
    tag = None
    if ":" in parts[-1]:
        parts[-1], tag = parts[-1].split(":", 1)
        if not tag or not _TAG.fullmatch(tag):
            raise _bad(text, f"invalid tag {tag!r}")
    if len(parts) == 1:
        parts.insert(0, "library")
    lowered = [p.lower() for p in parts]
    if len(lowered) != 2 or not all(_OLLAMA_PART.fullmatch(p) for p in lowered):
        raise _bad(text, "an Ollama model is [REGISTRY/]NAMESPACE/NAME[:TAG]")
    return PullRef("ollama", "/".join(lowered), tag, None, registry, ollama_style=ollama_style, text=text)


def parse_ref(text: str) -> PullRef:
    """Parse a pull reference (see the module table); raises ``InvalidRequest`` naming the accepted forms."""
    ref = text.strip()
    if not ref:
        raise _bad(text, "the reference is empty")
    lowered = ref.lower()
    if lowered.startswith("hf://"):
        return _hub_ref("hf", ref, ref[5:], ollama_style=False)
    if lowered.startswith("ms://"):
        return _hub_ref("ms", ref, ref[5:], ollama_style=False)
    if lowered.startswith("ollama://"):
        return _ollama_ref(ref, ref[9:], ollama_style=False)
    if "://" in ref:
        raise _bad(text, f"unknown scheme {ref.split('://', 1)[0]!r}")
    for host in _HF_HOSTS:
        if lowered.startswith(host):
            return _hub_ref("hf", ref, ref[len(host) :], ollama_style=True)
    for host in _MS_HOSTS:
        if lowered.startswith(host):
            return _hub_ref("ms", ref, ref[len(host) :], ollama_style=True)
    return _ollama_ref(ref, ref, ollama_style=True)
