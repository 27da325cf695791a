"""The models an evaluation scores, opened on the engine that can run them, and the pairing of two of them.

Owns ``Side`` (a model to score: a GGUF with its LoRA adapters, or a Hugging Face folder, named for messages and
records), opening it (llama.cpp for GGUF, transformers for a folder), refusing a context longer than the model
was trained for, and ``compare_sides``: one tokenization for both models (a GGUF side's, since llama.cpp's
tokenizer is the one the served model uses), the vocabulary check before anything is computed, then
``_method.compare``. Must not know: the store (callers build sides from manifests or files) or the command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaiyuan.errors import InvalidRequest
from kaiyuan.eval._method import Comparison, Progress, check_same_vocabulary, compare

__all__ = ["Side", "compare_sides", "open_side"]


@dataclass(frozen=True)
class Side:
    """One model to score."""

    name: str  # store name or file name, for messages and records
    path: Path  # a GGUF file or a Hugging Face folder
    adapters: tuple[Path, ...] = field(default=())  # LoRA GGUFs applied at scale 1 (an adapter model)
    digest: str = ""  # sha256-<hex> of the model file, when known (records name a reference by it)

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def _check_trained(side: Side, scorer: Any, n_ctx: int) -> None:
    trained = getattr(scorer, "n_ctx_train", 0) or getattr(getattr(scorer, "model", None), "n_ctx_train", 0)
    if trained and n_ctx > trained:
        scorer.close()
        raise InvalidRequest(
            f"--ctx {n_ctx} is longer than {side.name} was trained for ({trained} tokens); use a smaller --ctx"
        )


def open_side(side: Side, n_ctx: int, n_threads: int | None, *, bos: int | None = None) -> Any:
    """A scorer for ``side``: llama.cpp's ``Scorer`` for a GGUF, ``TorchScorer`` for a folder (which has no
    tokenizer of its own here: ``bos`` comes from the GGUF it is compared with)."""
    threads = n_threads or max(1, len(os.sched_getaffinity(0)))
    scorer: Any
    if side.is_folder:
        if side.adapters:
            raise InvalidRequest(
                f"{side.name}: adapters on a Hugging Face folder cannot be scored; merge first"
            )
        from kaiyuan.eval._torch_scorer import TorchScorer

        scorer = TorchScorer(side.path, n_ctx=n_ctx, n_threads=threads, bos=bos)
    else:
        from kaiyuan.eval._scorer import Scorer

        scorer = Scorer(side.path, n_ctx=n_ctx, n_threads=threads, adapters=side.adapters)
    _check_trained(side, scorer, n_ctx)
    return scorer


@contextmanager
def _opened(side: Side, n_ctx: int, n_threads: int | None, bos: int | None = None) -> Iterator[Any]:
    scorer = open_side(side, n_ctx, n_threads, bos=bos)
    try:
        yield scorer
    finally:
        scorer.close()


def _check_vocabularies(model: Any, reference: Any, names: tuple[str, str]) -> None:
    if hasattr(model, "vocabulary") and hasattr(reference, "vocabulary"):
        check_same_vocabulary(model.vocabulary(), reference.vocabulary(), names)
    elif model.n_vocab != reference.n_vocab:  # a folder: its output layer's width is what can be compared
        raise InvalidRequest(
            f"{names[0]} predicts {model.n_vocab} tokens and {names[1]} {reference.n_vocab}: KL divergence "
            f"compares models of one vocabulary"
        )


def compare_sides(
    model: Side,
    reference: Side,
    text: str,
    *,
    n_ctx: int,
    n_threads: int | None,
    max_windows: int | None = None,
    progress: Progress | None = None,
) -> tuple[Comparison, int]:
    """``model`` against ``reference`` on ``text`` (at most ``max_windows`` windows of it): the comparison and
    the number of tokens of the text that was scored."""
    if model.is_folder and reference.is_folder:
        raise InvalidRequest(
            f"{model.name} and {reference.name} are both Hugging Face folders; kaiyuan eval needs a GGUF on one "
            f"side for the tokenizer: convert one first (kaiyuan convert {model.name} --to gguf)"
        )
    with ExitStack() as stack:
        # The GGUF side opens first: it tokenizes (the reference's tokenizer when both are GGUF, as
        # llama-perplexity does), and its BOS is the one both sides put at a window's start.
        if reference.is_folder:
            model_scorer = stack.enter_context(_opened(model, n_ctx, n_threads))
            ref_scorer = stack.enter_context(_opened(reference, n_ctx, n_threads, bos=model_scorer.bos))
            tokenizer = model_scorer
        else:
            ref_scorer = stack.enter_context(_opened(reference, n_ctx, n_threads))
            model_scorer = stack.enter_context(_opened(model, n_ctx, n_threads, bos=ref_scorer.bos))
            tokenizer = ref_scorer
        _check_vocabularies(model_scorer, ref_scorer, (model.name, reference.name))
        tokens = tokenizer.tokenize(text)
        if max_windows is not None:
            tokens = tokens[: max_windows * n_ctx]
        return compare(model_scorer, ref_scorer, tokens, progress=progress), len(tokens)
