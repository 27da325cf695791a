"""The vocabulary side of the ``Engine`` protocol over a Hugging Face tokenizer: tokenize, detokenize, token
texts and end-of-generation ids, the way kaiyuan's chat layer expects them (special tokens parsed unless asked
not to, and rendered as their text on the way back).

Shared by the vLLM engine and by anything else that must speak for an HF-format model without loading it (the
front of the Ray replicas). Takes a ready tokenizer object; imports no transformers itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["HFVocabulary", "eog_tokens"]


def eog_tokens(folder: Path, tokenizer: Any) -> frozenset[int]:
    """End-of-generation ids: the tokenizer's EOS and generation_config.json's ``eos_token_id`` (int or list)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = folder / "generation_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            value = None
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and not isinstance(item, bool):
                ids.add(item)
    return frozenset(ids)


class HFVocabulary:
    """``tokenize`` / ``detokenize`` / ``token_text`` / ``is_eog`` over a transformers tokenizer of ``folder``."""

    def __init__(self, tokenizer: Any, folder: Path) -> None:
        self.tokenizer = tokenizer
        self.eog = eog_tokens(folder, tokenizer)
        self._token_text = lru_cache(maxsize=65536)(self._decode_one)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        ids = self.tokenizer.encode(
            text, add_special_tokens=add_special, split_special_tokens=not parse_special
        )
        return [int(t) for t in ids]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=False))

    def _decode_one(self, token: int) -> str:
        return str(self.tokenizer.decode([token], skip_special_tokens=False))

    def token_text(self, token: int) -> str:
        return str(self._token_text(token))

    def is_eog(self, token: int) -> bool:
        return token in self.eog
