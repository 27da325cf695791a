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
from kaiyuan.eval._method import (
    Comparison,
    Perplexity,
    check_same_vocabulary,
    compare,
    perplexity,
)
from kaiyuan.eval._record import add_record, comparison_record, perplexity_record

if TYPE_CHECKING:
    from kaiyuan.eval._scorer import Scorer
    from kaiyuan.store import Manifest, ModelStore

__all__ = ["EvalResult", "evaluate"]

MIN_CTX = 16


@dataclass(frozen=True)
class EvalResult:
    model: str  # store name of the model evaluated
    corpus: Corpus
    tokens: int  # tokens in the text
    perplexity: Perplexity  # the model's
    comparison: Comparison | None  # with --against
    record: dict[str, Any]  # what was written to the manifest


def _gguf(manifest: Manifest) -> Manifest:
    if manifest.is_folder:
        raise InvalidRequest(
            f"{manifest.full_name} is a Hugging Face folder; kaiyuan eval scores GGUF models with llama.cpp: "
            f"convert it first (kaiyuan convert {manifest.full_name} --to gguf)"
        )
    return manifest


def _open(manifest: Manifest, n_ctx: int, n_threads: int | None) -> Scorer:
    from kaiyuan.eval._scorer import Scorer

    scorer = Scorer(manifest.model_path, n_ctx=n_ctx, n_threads=n_threads, adapters=manifest.adapter_paths)
    trained = scorer.model.n_ctx_train
    if trained and n_ctx > trained:
        scorer.close()
        raise InvalidRequest(
            f"--ctx {n_ctx} is longer than {manifest.full_name} was trained for ({trained} tokens); use a "
            f"smaller --ctx"
        )
    return scorer


def _engine_name() -> str:
    from importlib.metadata import version

    return f"llama.cpp (llama-cpp-python {version('llama-cpp-python')})"


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
    manifest = _gguf(store.resolve(model))
    reference = _gguf(store.resolve(against)) if against is not None else None
    corpus = read_corpus(text)
    with _open(manifest, n_ctx, n_threads) as scorer:
        comparison: Comparison | None = None
        if reference is None:
            tokens = scorer.tokenize(corpus.text)
            result = perplexity(scorer, tokens, progress=progress)
        else:
            with _open(reference, n_ctx, n_threads) as ref_scorer:
                check_same_vocabulary(
                    scorer.vocabulary(), ref_scorer.vocabulary(), (manifest.full_name, reference.full_name)
                )
                tokens = ref_scorer.tokenize(corpus.text)
                comparison = compare(scorer, ref_scorer, tokens, progress=progress)
                result = comparison.model
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if comparison is None or reference is None:
        entry = perplexity_record(result, corpus, tokens=len(tokens), engine=_engine_name(), created=created)
    else:
        entry = comparison_record(
            comparison,
            corpus,
            tokens=len(tokens),
            against={"name": reference.full_name, "digest": reference.blob.digest},
            engine=_engine_name(),
            created=created,
        )
    if record:
        current = store.resolve(manifest.full_name)  # read again: the manifest may have changed meanwhile
        current.evals = add_record(current.evals, entry)
        store.write_manifest(current)
    return EvalResult(manifest.full_name, corpus, len(tokens), result, comparison, entry)
