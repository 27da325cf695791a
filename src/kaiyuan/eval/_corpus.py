"""The text an evaluation scores: a user's file or the corpus shipped with kaiyuan, and its identity.

Owns reading the text (UTF-8, clear errors for a missing, unreadable, empty or non-text file) and naming it
(file name and SHA-256 of its bytes), so that recorded figures say which text they came from. The shipped corpus
is ``data/corpus.txt`` (public domain, see ``data/README.md``). Must not know: tokens, models or the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kaiyuan.errors import InvalidRequest

__all__ = ["DEFAULT_CORPUS", "Corpus", "read_corpus"]

DEFAULT_CORPUS = Path(__file__).parent / "data" / "corpus.txt"


@dataclass(frozen=True)
class Corpus:
    name: str  # the file name, or "kaiyuan:corpus.txt" for the shipped corpus
    digest: str  # sha256-<hex> of the file's bytes
    text: str


def read_corpus(path: Path | None = None) -> Corpus:
    """The text at ``path`` (default: the shipped corpus)."""
    file = DEFAULT_CORPUS if path is None else Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise InvalidRequest(f"text file not found: {file}") from None
    except OSError as exc:
        raise InvalidRequest(f"cannot read the text file {file}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"{file} is not UTF-8 text (byte {exc.start} cannot be decoded); give a plain-text corpus"
        ) from exc
    if not text.strip():
        raise InvalidRequest(f"{file} is empty: give a text of at least two context windows of tokens")
    name = f"kaiyuan:{file.name}" if path is None else file.name
    return Corpus(name=name, digest="sha256-" + hashlib.sha256(data).hexdigest(), text=text)
