"""The quick cost measurement ``kaiyuan export --quant`` and ``kaiyuan convert`` make by default.

Owns what "cheap by default" means: the first ``QUICK_WINDOWS`` windows of ``QUICK_CTX`` tokens of the shipped
corpus (512 tokens, 252 of them scored: seconds for a small model on one core, a minute or so for a 7B), the
result's record (``kind`` ``against`` on a converted store model, ``export`` on the source of an exported file,
both with ``"quick": true``), and nothing else: figures for a release notice or a comparison with llama.cpp come
from ``kaiyuan eval`` on a longer text. Must not know: the command line or the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaiyuan.eval._corpus import read_corpus
from kaiyuan.eval._method import Comparison, Progress
from kaiyuan.eval._record import comparison_record
from kaiyuan.eval._sides import Side, compare_sides

__all__ = ["QUICK_CTX", "QUICK_WINDOWS", "Cost", "measure_cost"]

QUICK_CTX = 128  # tokens per window
QUICK_WINDOWS = 4  # windows of the shipped corpus scored


@dataclass(frozen=True)
class Cost:
    comparison: Comparison
    record: dict[str, Any]  # what is written on a manifest


def measure_cost(
    model: Side,
    reference: Side,
    *,
    n_threads: int | None = None,
    trained: tuple[int, ...] = (),
    output: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Cost:
    """``model`` (a converted model, or an exported file) against ``reference`` (its source), quickly. With
    ``output`` (``{"file", "quantization", "digest"}`` of an exported file) the record is of kind ``export``, to be
    kept on the source's manifest. ``trained``: the context lengths the two models were trained for, when known
    (a model trained for fewer than ``QUICK_CTX`` tokens is measured in windows of its own length)."""
    from kaiyuan.eval._eval import engine_name

    corpus = read_corpus(None)
    n_ctx = min([QUICK_CTX, *(n - n % 2 for n in trained if n >= 16)])
    comparison, tokens = compare_sides(
        model, reference, corpus.text, n_ctx=n_ctx, n_threads=n_threads, max_windows=QUICK_WINDOWS,
        progress=progress,
    )  # fmt: skip
    record = comparison_record(
        comparison,
        corpus,
        tokens=tokens,
        against={"name": reference.name, "digest": reference.digest},
        engine=engine_name(model, reference),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    record["quick"] = True
    if output is not None:
        record["kind"] = "export"
        record["output"] = dict(output)
    return Cost(comparison, record)
