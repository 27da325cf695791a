"""Evaluation results as records on a model's manifest (``evals``), and their one-line description.

Owns the record's JSON form: what was measured (``kind``: ``perplexity``, ``against``, ``export`` — a file
``kaiyuan export`` wrote, measured against this model, under ``output`` — or ``chat``, held-out chats), on which
text or chat file (name and SHA-256) and context, with which engine, the figures, and for ``against`` which reference (store name and
model-file digest). A new record replaces an earlier one of the same kind, text, context and reference, so
re-running an evaluation updates its figures instead of piling them up. Must not know: how figures are computed
or where manifests are written.

    {"kind": "perplexity", "corpus": {"name", "digest", "tokens"}, "n_ctx": 512, "windows": 4,
     "tokens_scored": 1020, "ppl": 12.3, "ppl_stderr": 0.4, "engine": "llama.cpp (llama-cpp-python 0.3.36)",
     "created": "2026-...",
     (against only) "against": {"name", "digest"}, "reference_ppl": 11.9, "ppl_ratio": 1.03,
     "kl": {"mean", "median", "p99", "max"}, "top1_agreement": 0.95,
     (export only) "output": {"file", "quantization", "digest"}, (quick measurements) "quick": true}
    {"kind": "chat", "corpus": {"name", "digest", "examples"}, "n_ctx": 2048, "loss": 0.41, "assistant_tokens": 96,
     "matched": 7, "examples": 8, "match_rate": 0.875, "checks": {"exact", "regex", "schema"}, "engine", "created",
     (with --against) "against": {"name", "digest", "loss", "assistant_tokens", "matched", "examples", "match_rate"}}
"""

from __future__ import annotations

from typing import Any

from kaiyuan.eval._corpus import Corpus
from kaiyuan.eval._method import Comparison, Perplexity

__all__ = [
    "add_record",
    "comparison_record",
    "describe_chat_record",
    "describe_record",
    "perplexity_record",
]

_KEY_FIELDS = ("kind", "n_ctx")


def _base(
    kind: str, result: Perplexity, corpus: Corpus, tokens: int, engine: str, created: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "corpus": {"name": corpus.name, "digest": corpus.digest, "tokens": tokens},
        "n_ctx": result.n_ctx,
        "windows": result.windows,
        "tokens_scored": result.tokens_scored,
        "ppl": result.ppl,
        "ppl_stderr": result.ppl_stderr,
        "engine": engine,
        "created": created,
    }


def perplexity_record(
    result: Perplexity, corpus: Corpus, *, tokens: int, engine: str, created: str
) -> dict[str, Any]:
    return _base("perplexity", result, corpus, tokens, engine, created)


def comparison_record(
    result: Comparison,
    corpus: Corpus,
    *,
    tokens: int,
    against: dict[str, str],
    engine: str,
    created: str,
) -> dict[str, Any]:
    record = _base("against", result.model, corpus, tokens, engine, created)
    record.update(
        against=dict(against),
        reference_ppl=result.reference.ppl,
        ppl_ratio=result.ppl_ratio,
        kl={"mean": result.kl_mean, "median": result.kl_median, "p99": result.kl_p99, "max": result.kl_max},
        top1_agreement=result.top1_agreement,
    )
    return record


def _object(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    corpus = _object(record, "corpus")
    against = _object(record, "against")
    output = _object(record, "output")
    return (
        *(record.get(k) for k in _KEY_FIELDS),
        corpus.get("digest"),
        against.get("digest"),
        output.get("quantization"),
    )


def add_record(records: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """``records`` without any earlier record of the same measurement, then ``record``."""
    return [*(r for r in records if _key(r) != _key(record)), record]


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def describe_chat_record(record: dict[str, Any]) -> tuple[str, str]:
    """``("chat FILE", "answers matched 7/8 (87.5%), assistant-token loss 0.4120 (smollm2:135m: 0/8, 3.2100)")``."""
    corpus = _object(record, "corpus")

    def figures(part: dict[str, Any]) -> str:
        rate = part.get("match_rate")
        rate_text = f"{rate * 100:.1f}%" if isinstance(rate, int | float) else "?"
        return (
            f"answers matched {part.get('matched', '?')}/{part.get('examples', '?')} ({rate_text}), "
            f"assistant-token loss {_number(part.get('loss'), '.4f')}"
        )

    line = figures(record)
    against = _object(record, "against")
    if against:
        line += f"; {against.get('name', '?')}: {figures(against)}"
    return f"chat {corpus.get('name', '?')}", f"{line} ({str(record.get('created', ''))[:10]})"


def _cost_line(record: dict[str, Any], where: str, when: str) -> str:
    kl = _object(record, "kl")
    top1 = record.get("top1_agreement")
    top1_text = f"{top1 * 100:.2f}%" if isinstance(top1, int | float) else "?"
    ppl = f"{_number(record.get('ppl'), '.4f')} ± {_number(record.get('ppl_stderr'), '.4f')}"
    quick = ", quick" if record.get("quick") else ""
    return (
        f"mean KL {_number(kl.get('mean'), '.6f')}, p99 KL {_number(kl.get('p99'), '.6f')}, top-1 {top1_text}, "
        f"PPL ratio {_number(record.get('ppl_ratio'), '.4f')} (PPL {ppl}) {where} ({when}{quick})"
    )


def describe_record(record: dict[str, Any]) -> tuple[str, str]:
    """A label and one line for ``kaiyuan show``: ``("perplexity", "28.93 ± 2.40 on … at ctx 512 (…)")``,
    ``("vs NAME", "mean KL …, top-1 …, PPL ratio … on …")``, ``("export Q4_0", "… of FILE against this model")``
    or ``("chat FILE", "answers matched …, assistant-token loss …")``."""
    corpus = _object(record, "corpus")
    where = f"on {corpus.get('name', '?')} at ctx {record.get('n_ctx', '?')}"
    when = str(record.get("created", ""))[:10]
    kind = record.get("kind")
    if kind == "chat":
        return describe_chat_record(record)
    if kind == "export":
        output = _object(record, "output")
        line = _cost_line(record, where, when)
        return (
            f"export {output.get('quantization', '?')}",
            f"{output.get('file', '?')} against this model: {line}",
        )
    if kind == "against":
        return f"vs {_object(record, 'against').get('name', '?')}", _cost_line(record, where, when)
    ppl = f"{_number(record.get('ppl'), '.4f')} ± {_number(record.get('ppl_stderr'), '.4f')}"
    return "perplexity", f"{ppl} {where} ({record.get('tokens_scored', '?')} tokens scored, {when})"
