"""llama-perplexity's method: a corpus cut into windows of ``n_ctx`` tokens, the second half of each scored.

Owns the windowing (``tokens // n_ctx`` whole windows, the model's BOS written over each window's first token when
the model adds one), the statistics (perplexity and its standard error; KL divergence of a model's next-token
distributions from a reference's: mean, median, 99th percentile, maximum; top-1 agreement; the perplexity ratio),
and the check that two models share one vocabulary before anything is computed. Scoring only the second half means
every scored token sees at least ``n_ctx / 2`` tokens of context, so figures match llama.cpp's.
Must not know: llama.cpp (it asks a ``Scorer``), the store or the command line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kaiyuan.errors import InvalidRequest

__all__ = [
    "Comparison",
    "Perplexity",
    "WindowScorer",
    "check_same_vocabulary",
    "compare",
    "min_tokens",
    "perplexity",
]

Progress = Callable[[int, int], None]  # (windows done, windows in all)


class WindowScorer(Protocol):
    """What the method needs of a model (``kaiyuan.eval.Scorer`` is one)."""

    n_ctx: int

    @property
    def bos(self) -> int | None: ...

    def logits(self, window: list[int], first: int = 0) -> np.ndarray:
        """One row of logits per position from ``first`` on: a fresh array, which the method overwrites."""
        ...


@dataclass(frozen=True)
class Perplexity:
    """Perplexity of a model over ``windows`` windows of ``n_ctx`` tokens (``tokens_scored`` tokens scored)."""

    ppl: float
    ppl_stderr: float  # standard error of the perplexity (llama-perplexity's "±")
    n_ctx: int
    windows: int
    tokens_scored: int
    seconds: float  # wall time of the decoding

    @property
    def tokens_per_second(self) -> float:
        """Tokens decoded per second (whole windows: both halves are computed)."""
        return self.windows * self.n_ctx / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Comparison:
    """A model against a reference on the same windows: KL(reference || model) per scored token, in nats."""

    model: Perplexity
    reference: Perplexity
    kl_mean: float
    kl_median: float
    kl_p99: float
    kl_max: float
    top1_agreement: float  # fraction of scored tokens where both models' most likely next token is the same

    @property
    def ppl_ratio(self) -> float:
        return self.model.ppl / self.reference.ppl


def min_tokens(n_ctx: int) -> int:
    """How many tokens a corpus needs for a context of ``n_ctx``: two windows (llama-perplexity's minimum)."""
    return 2 * n_ctx


def _windows(tokens: list[int], n_ctx: int, bos: int | None) -> Iterator[tuple[list[int], list[int]]]:
    """Each window's input tokens and the tokens its second half predicts."""
    if len(tokens) < min_tokens(n_ctx):
        raise InvalidRequest(
            f"the text has {len(tokens)} tokens but a context of {n_ctx} needs at least {min_tokens(n_ctx)} "
            f"(two windows); give a longer text or a smaller --ctx"
        )
    first = n_ctx // 2
    for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
        window = tokens[start : start + n_ctx]
        if bos is not None:
            window[0] = bos
        yield window, tokens[start + first + 1 : start + n_ctx]


@dataclass
class _Rows:
    """One window's scored rows, reduced in place: the logits array becomes ``exp(logits - max)`` (the scorer's
    array is a copy, used as scratch so that no vocabulary-sized array is allocated per window: a log-softmax with
    temporaries cost a quarter of the decode time on one thread)."""

    exp: np.ndarray  # exp(logits - row max), float32, (rows, n_vocab)
    sums: np.ndarray  # row sums of ``exp``, float64
    log_z: np.ndarray  # log-normalizer of each row (logsumexp of the logits), float64
    top: np.ndarray  # argmax of each row
    nll: np.ndarray  # negative log-likelihood of each row's target, float64


def _reduce(logits: np.ndarray, targets: list[int]) -> _Rows:
    """``logits`` (rows, n_vocab) turned into its statistics, in place."""
    peak = logits.max(axis=1, keepdims=True)
    top = logits.argmax(axis=1)
    picked = logits[np.arange(len(targets)), targets].astype(np.float64)
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    sums = logits.sum(axis=1, dtype=np.float64)
    log_z = np.log(sums) + peak[:, 0]
    return _Rows(logits, sums, log_z, top, log_z - picked)


def _scored_logits(scorer: WindowScorer, window: list[int]) -> np.ndarray:
    """Logits at the positions whose prediction is scored (n_ctx/2 .. n_ctx-2), float32, the caller's to change."""
    logits = scorer.logits(window, scorer.n_ctx // 2)[:-1]
    return logits if logits.dtype == np.float32 else logits.astype(np.float32)


class _NllSum:
    """Running sums of the negative log-likelihood for the perplexity and its standard error."""

    def __init__(self) -> None:
        self.total = 0.0
        self.squares = 0.0
        self.count = 0
        self.windows = 0

    def add(self, nll: np.ndarray) -> None:
        self.total += float(nll.sum())
        self.squares += float((nll * nll).sum())
        self.count += len(nll)
        self.windows += 1

    def result(self, n_ctx: int, seconds: float) -> Perplexity:
        mean = self.total / self.count
        variance = max(self.squares / self.count - mean * mean, 0.0)
        stderr_mean = math.sqrt(variance / max(self.count - 1, 1))
        ppl = math.exp(mean)
        return Perplexity(ppl, ppl * stderr_mean, n_ctx, self.windows, self.count, seconds)


def perplexity(scorer: WindowScorer, tokens: list[int], *, progress: Progress | None = None) -> Perplexity:
    """Perplexity of ``scorer``'s model over ``tokens`` (at least two windows of its ``n_ctx``)."""
    windows = list(_windows(tokens, scorer.n_ctx, scorer.bos))
    sums = _NllSum()
    seconds = 0.0
    for done, (window, targets) in enumerate(windows, 1):
        began = time.perf_counter()
        sums.add(_reduce(_scored_logits(scorer, window), targets).nll)
        seconds += time.perf_counter() - began
        if progress is not None:
            progress(done, len(windows))
    return sums.result(scorer.n_ctx, seconds)


def check_same_vocabulary(model: list[bytes], reference: list[bytes], names: tuple[str, str]) -> None:
    """Refuse two models whose token ids do not mean the same text: their distributions cannot be compared."""
    if len(model) != len(reference):
        raise InvalidRequest(
            f"{names[0]} has {len(model)} tokens in its vocabulary and {names[1]} has {len(reference)}: KL "
            f"divergence compares models of one vocabulary (a quantization, conversion or fine-tune of one base)"
        )
    differ = next((i for i, (a, b) in enumerate(zip(model, reference, strict=True)) if a != b), None)
    if differ is not None:
        raise InvalidRequest(
            f"{names[0]} and {names[1]} have different vocabularies (token {differ} is {model[differ]!r} in one "
            f"and {reference[differ]!r} in the other): KL divergence compares models of one vocabulary"
        )


def compare(
    model: WindowScorer, reference: WindowScorer, tokens: list[int], *, progress: Progress | None = None
) -> Comparison:
    """``model`` against ``reference`` on the same windows of ``tokens`` (check the vocabularies first)."""
    if model.n_ctx != reference.n_ctx:
        raise ValueError("model and reference must score windows of one size")
    windows = list(_windows(tokens, model.n_ctx, reference.bos))
    sums = {"model": _NllSum(), "reference": _NllSum()}
    seconds = {"model": 0.0, "reference": 0.0}
    kl_parts: list[np.ndarray] = []
    agree = 0
    for done, (window, targets) in enumerate(windows, 1):
        began = time.perf_counter()
        ref_logits = _scored_logits(reference, window)
        seconds["reference"] += time.perf_counter() - began
        began = time.perf_counter()
        model_logits = _scored_logits(model, window)
        seconds["model"] += time.perf_counter() - began
        # KL(ref || model) per row = sum p_ref (x_ref - x_model) - (log_z_ref - log_z_model), x being logits
        difference = ref_logits - model_logits
        model_rows = _reduce(model_logits, targets)
        ref_rows = _reduce(ref_logits, targets)
        np.multiply(ref_rows.exp, difference, out=difference)
        expected = difference.sum(axis=1, dtype=np.float64) / ref_rows.sums
        kl_parts.append(expected - (ref_rows.log_z - model_rows.log_z))
        sums["reference"].add(ref_rows.nll)
        sums["model"].add(model_rows.nll)
        agree += int(np.count_nonzero(ref_rows.top == model_rows.top))
        if progress is not None:
            progress(done, len(windows))
    kl = np.maximum(np.concatenate(kl_parts), 0.0)  # rounding can make a near-zero KL slightly negative
    n_ctx = model.n_ctx
    return Comparison(
        model=sums["model"].result(n_ctx, seconds["model"]),
        reference=sums["reference"].result(n_ctx, seconds["reference"]),
        kl_mean=float(kl.mean()),
        kl_median=float(np.median(kl)),
        kl_p99=float(np.percentile(kl, 99)),
        kl_max=float(kl.max()),
        top1_agreement=agree / len(kl),
    )
