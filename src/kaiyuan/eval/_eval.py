"""``evaluate``: a store model's perplexity over a text, or its cost against a reference, recorded on its manifest.

Owns the order of the work: resolve the models, read the text, load each model for scoring (adapters applied),
check the text's length and the vocabularies before computing, score, and write the result to MODEL's manifest.
Must not know: the command line or how results are shown (``_record.describe_record``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaiyuan.errors import InvalidRequest
from kaiyuan.eval._corpus import Corpus, read_corpus
from kaiyuan.eval._method import Comparison, Perplexity, perplexity
from kaiyuan.eval._record import add_record, comparison_record, perplexity_record
from kaiyuan.eval._sides import Side, compare_sides, open_side

if TYPE_CHECKING:
    from kaiyuan.store import Manifest, ModelStore

__all__ = ["EvalResult", "engine_name", "evaluate", "side_of"]

MIN_CTX = 16


@dataclass(frozen=True)
class EvalResult:
    model: str  # store name of the model evaluated
    corpus: Corpus
    tokens: int  # tokens in the text
    perplexity: Perplexity  # the model's
    comparison: Comparison | None  # with --against
    record: dict[str, Any]  # what was written to the manifest


def side_of(manifest: Manifest) -> Side:
    """The store model as a side to score: its file (or folder) with its adapters applied."""
    return Side(
        manifest.full_name,
        Path(manifest.model_path),
        tuple(Path(p) for p in manifest.adapter_paths),
        manifest.blob.digest,
    )


def _gguf(manifest: Manifest) -> Manifest:
    if manifest.is_folder:
        raise InvalidRequest(
            f"{manifest.full_name} is a Hugging Face folder; kaiyuan eval scores it only against a GGUF "
            f"(--against) whose tokenizer it borrows: convert it first (kaiyuan convert {manifest.full_name} "
            f"--to gguf), or give --against"
        )
    return manifest


def engine_name(*sides: Side) -> str:
    """The engines that computed a record's figures, with versions."""
    from importlib.metadata import version

    name = f"llama.cpp (llama-cpp-python {version('llama-cpp-python')})"
    if any(side.is_folder for side in sides):
        name += f" + transformers {version('transformers')}"
    return name


def evaluate(
    store: ModelStore,
    model: str,
    *,
    text: Path | None = None,
    n_ctx: int = 512,
    n_threads: int | None = None,
    against: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    record: bool = True,
) -> EvalResult:
    """Perplexity of ``model`` over ``text`` (default: the shipped corpus) with llama-perplexity's method, or with
    ``against`` its KL divergence from that reference; the result is added to ``model``'s manifest when
    ``record``."""
    if n_ctx < MIN_CTX:
        raise InvalidRequest(f"--ctx must be at least {MIN_CTX} tokens, not {n_ctx}")
    manifest = store.resolve(model)
    reference = store.resolve(against) if against is not None else None
    corpus = read_corpus(text)
    comparison: Comparison | None = None
    if reference is None:
        with open_side(side_of(_gguf(manifest)), n_ctx, n_threads) as scorer:
            ids = scorer.tokenize(corpus.text)
            tokens = len(ids)
            result = perplexity(scorer, ids, progress=progress)
    else:
        comparison, tokens = compare_sides(
            side_of(manifest),
            side_of(reference),
            corpus.text,
            n_ctx=n_ctx,
            n_threads=n_threads,
            progress=progress,
        )
        result = comparison.model
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if comparison is None or reference is None:
        entry = perplexity_record(result, corpus, tokens=tokens, engine=engine_name(), created=created)
    else:
        entry = comparison_record(
            comparison,
            corpus,
            tokens=tokens,
            against={"name": reference.full_name, "digest": reference.blob.digest},
            engine=engine_name(side_of(manifest), side_of(reference)),
            created=created,
        )
    if record:
        current = store.resolve(manifest.full_name)  # read again: the manifest may have changed meanwhile
        current.evals = add_record(current.evals, entry)
        store.write_manifest(current)
    return EvalResult(manifest.full_name, corpus, tokens, result, comparison, entry)
