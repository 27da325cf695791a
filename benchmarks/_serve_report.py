"""Turns serve_bench.py's per-round measurements into medians, paired ratios, target verdicts and a text table.

Owns the statistics (medians that skip missing values; ratios taken within each round, then the median over
rounds, so the machine's minute-to-minute swings cancel) and the issue's targets. Must not know HTTP or processes.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# One round: {"peers": {peer: {metric: value | None}}}; the pseudo-peer "batched-bench" carries the ceiling.
Round = Mapping[str, Any]

KAIYUAN = "kaiyuan"
LLAMA_SERVER = "llama-server"
LCP = "llama-cpp-python"
BATCHED = "batched-bench"
COLUMNS = (KAIYUAN, LLAMA_SERVER, LCP, BATCHED)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


METRICS = (
    Metric("single_tps", "single-stream decode", "tok/s", True),
    Metric("agg_tps", "8 streams, aggregate (end to end)", "tok/s", True),
    Metric("agg_steady_tps", "8 streams, while all 8 decode", "tok/s", True),
    Metric("ttft_cold_s", "TTFT, ~1k-token system prompt, cold", "ms", False),
    Metric("ttft_warm_s", "TTFT, same system prompt, warm", "ms", False),
    Metric("latency_1tok_s", "max_tokens=1 request latency", "ms", False),
    Metric("single_cpu_ms", "server CPU per token, single stream", "ms CPU", False),
    Metric("agg_cpu_ms", "server CPU per token, 8 streams", "ms CPU", False),
    Metric("rss_mb", "peak RSS", "MB", False),
)


@dataclass(frozen=True)
class Target:
    """``numerator / denominator  op  threshold``; each side is (peer, metric) or ("budget", key)."""

    label: str
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    op: str  # ">=" or "<="
    threshold: float


TARGETS = (
    Target(
        "single-stream decode ≥ 0.95× llama-server",
        (KAIYUAN, "single_tps"),
        (LLAMA_SERVER, "single_tps"),
        ">=",
        0.95,
    ),
    Target("8 streams ≥ 1.0× llama-server -np 8", (KAIYUAN, "agg_tps"), (LLAMA_SERVER, "agg_tps"), ">=", 1.0),
    Target("8 streams ≥ 2× llama-cpp-python", (KAIYUAN, "agg_tps"), (LCP, "agg_tps"), ">=", 2.0),
    Target(
        "8 streams ≥ 0.85× batched-bench 8-seq decode", (KAIYUAN, "agg_tps"), (BATCHED, "agg_tps"), ">=", 0.85
    ),
    Target("warm TTFT ≤ 0.05× cold TTFT", (KAIYUAN, "ttft_warm_s"), (KAIYUAN, "ttft_cold_s"), "<=", 0.05),
    Target(
        "max_tokens=1 latency ≤ 1.2× llama-server",
        (KAIYUAN, "latency_1tok_s"),
        (LLAMA_SERVER, "latency_1tok_s"),
        "<=",
        1.2,
    ),
    Target("peak RSS ≤ model + KV + 200 MB", (KAIYUAN, "rss_mb"), ("budget", "rss_mb"), "<=", 1.0),
)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are present; None when none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def value(round_: Round, side: tuple[str, str], budget: Mapping[str, float]) -> float | None:
    peer, key = side
    if peer == "budget":
        return budget.get(key)
    got = round_.get("peers", {}).get(peer, {}).get(key)
    return float(got) if got is not None else None


def paired_ratio(
    rounds: Sequence[Round], num: tuple[str, str], den: tuple[str, str], budget: Mapping[str, float]
) -> float | None:
    """Median over rounds of num/den measured in the same round."""
    ratios = []
    for r in rounds:
        a, b = value(r, num, budget), value(r, den, budget)
        if a is not None and b:
            ratios.append(a / b)
    return median(ratios)


def medians(rounds: Sequence[Round]) -> dict[str, dict[str, float | None]]:
    """``{peer: {metric: median over rounds}}``."""
    peers = sorted({p for r in rounds for p in r.get("peers", {})})
    keys = sorted(
        {
            k
            for r in rounds
            for p in r.get("peers", {}).values()
            for k, v in p.items()
            if isinstance(v, int | float)
        }
    )
    return {p: {k: median(r.get("peers", {}).get(p, {}).get(k) for r in rounds) for k in keys} for p in peers}


def verdicts(rounds: Sequence[Round], budget: Mapping[str, float]) -> list[dict[str, Any]]:
    """Each target with its measured (paired, median) ratio and whether it is met; ratio None = not measured."""
    out = []
    for t in TARGETS:
        ratio = paired_ratio(rounds, t.numerator, t.denominator, budget)
        met = None if ratio is None else (ratio >= t.threshold if t.op == ">=" else ratio <= t.threshold)
        out.append({"target": t.label, "ratio": ratio, "op": t.op, "threshold": t.threshold, "met": met})
    return out


def _fmt(metric: Metric, v: float | None) -> str:
    if v is None:
        return "–"
    if metric.unit == "ms":
        return f"{v * 1000:.0f}"
    if metric.unit == "ms CPU":
        return f"{v:.2f}"
    if metric.unit == "MB":
        return f"{v:.0f}"
    return f"{v:.1f}"


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def table(rounds: Sequence[Round], budget: Mapping[str, float]) -> str:
    """A Markdown table of medians and kaiyuan/peer ratios, then the targets with verdicts."""
    med = medians(rounds)
    head = ["metric", *COLUMNS, "kaiyuan / llama-server", "kaiyuan / llama-cpp-python"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METRICS:
        cells = [f"{m.label} ({m.unit})"]
        cells += [_fmt(m, med.get(p, {}).get(m.key)) for p in COLUMNS]
        for peer in (LLAMA_SERVER, LCP):
            cells.append(_ratio(paired_ratio(rounds, (KAIYUAN, m.key), (peer, m.key), budget)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for v in verdicts(rounds, budget):
        verdict = "not measured" if v["met"] is None else ("met" if v["met"] else "MISSED")
        lines.append(f"| {v['target']} | {_ratio(v['ratio'])} | {verdict} |")
    return "\n".join(lines)
