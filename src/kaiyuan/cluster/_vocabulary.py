"""The model's vocabulary in the front, without its weights: what ``ReplicaEngine`` tokenizes with.

A GGUF model: llama.cpp's vocabulary loaded alone (``vocab_only``: milliseconds, a few MB), the same one the
llama.cpp engine on a replica uses. A Hugging Face folder (served by vLLM on the replicas): the folder's own
tokenizer through ``transformers`` — the tokenizer vLLM loads — read by the same ``HFVocabulary`` the vLLM engine
uses (special tokens parsed unless asked not to; end of generation = EOS and ``generation_config.json``'s). Must not know HTTP or Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kaiyuan.engine._hf_vocabulary import HFVocabulary
from kaiyuan.errors import InvalidModelFile, MissingExtra

__all__ = ["Vocabulary", "load_vocabulary"]


class Vocabulary(Protocol):
    n_vocab: int

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str: ...

    def is_eog(self, token: int) -> bool: ...

    def close(self) -> None: ...


class _HfVocabulary(HFVocabulary):
    """A Hugging Face folder's tokenizer (``kaiyuan.engine``'s ``HFVocabulary``, as the vLLM engine uses it)."""

    def __init__(self, folder: Path) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise MissingExtra("vllm", feature="serving a Hugging Face model on replicas") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise InvalidModelFile(f"cannot load the tokenizer of {folder}: {exc}") from exc
        super().__init__(tokenizer, folder)
        self.n_vocab = len(tokenizer)

    def close(self) -> None:
        pass


def load_vocabulary(path: Path) -> Vocabulary:
    """The vocabulary of the model at ``path``: a GGUF file or a Hugging Face folder."""
    if path.is_dir():
        return _HfVocabulary(path)
    from kaiyuan.engine.llama_cpp._model import Model

    vocabulary: Vocabulary = Model(str(path), vocab_only=True)
    return vocabulary
