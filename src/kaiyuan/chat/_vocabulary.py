"""What the grammars need to know of a model's vocabulary, read from its engine once and kept per engine.

Owns: the exact spelling of a text in the model's tokens (``tokens_of``: the tokenizer's tokens, kept only when
they give the text back), single special tokens for markers like ``<tool_call>`` (``token_of``), and the most
characters one token holds (``longest_token``, for lower bounds on how many tokens a text takes).
Must not know: grammars, tool-call formats, HTTP.
"""

from __future__ import annotations

import threading
import weakref
from functools import cached_property

from kaiyuan.engine import Engine

__all__ = ["Vocabulary", "vocabulary"]


class Vocabulary:
    """One engine's vocabulary as the grammars see it. Hashable by identity: grammar caches key on it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._spellings: dict[str, tuple[int, ...] | None] = {}
        self._specials: dict[str, int | None] = {}

    def tokens_of(self, text: str) -> tuple[int, ...] | None:
        """The tokens that spell ``text`` exactly (tokenized as plain text), or None when they do not give it
        back (e.g. a tokenizer that adds a leading space)."""
        found = self._spellings.get(text, ())
        if found == ():
            tokens = tuple(self._engine.tokenize(text, add_special=False, parse_special=False))
            found = tokens if tokens and self._engine.detokenize(tokens) == text else None
            self._spellings[text] = found
        return found

    def token_of(self, text: str) -> int | None:
        """``text``'s token id when the vocabulary has it as one token (a marker like ``<tool_call>``)."""
        if text not in self._specials:
            tokens = self._engine.tokenize(text, add_special=False, parse_special=True)
            single = len(tokens) == 1 and self._engine.token_text(tokens[0]) == text
            self._specials[text] = tokens[0] if single else None
        return self._specials[text]

    @cached_property
    def longest_token(self) -> int:
        """The most characters any one token stands for."""
        return max((len(self._engine.token_text(t)) for t in range(self._engine.n_vocab)), default=1) or 1


_LOCK = threading.Lock()
_BY_ENGINE: weakref.WeakKeyDictionary[Engine, Vocabulary] = weakref.WeakKeyDictionary()


def vocabulary(engine: Engine) -> Vocabulary:
    """The engine's ``Vocabulary`` (one per engine, for as long as the engine lives)."""
    with _LOCK:
        found = _BY_ENGINE.get(engine)
        if found is None:
            found = _BY_ENGINE[engine] = Vocabulary(engine)
        return found
