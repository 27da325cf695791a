"""Pulling models from Hugging Face, ModelScope and Ollama registries into the store.

``pull_model(ref, store, settings)`` resolves a reference (``hf://ORG/REPO[:QUANT|:FILE.gguf][@REV]``,
``ms://…``, ``ollama://[REGISTRY/]NAMESPACE/NAME[:TAG]``, or Ollama-style ``hf.co/…`` and plain names), checks the
license policy with what the model card or registry declares before any weights are fetched, downloads the GGUF
resumably with SHA-256 verification, and adds the model atomically. See ``docs/pull.md``.

Imports the leaf layer, ``kaiyuan.license`` and httpx; nothing of the server or the CLI.
"""

from kaiyuan.store.pull._pull import PullEvent, PullListener, pull_model
from kaiyuan.store.pull._quant import DEFAULT_QUANT, RemoteFile, choose_gguf, quant_label
from kaiyuan.store.pull._refs import PullRef, parse_ref

__all__ = [
    "DEFAULT_QUANT",
    "PullEvent",
    "PullListener",
    "PullRef",
    "RemoteFile",
    "choose_gguf",
    "parse_ref",
    "pull_model",
    "quant_label",
]
