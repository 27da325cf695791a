#!/usr/bin/env python3
"""Serving a base model and an adapter model of it at once: one shared engine vs one engine per model.

The choice issue 7 asks to measure. Both variants run the bundled SmolLM2-135M (Q4_1) and a random rank-8 GGUF LoRA
on it, with the same llama.cpp threads and the same load: N base and N adapter requests submitted together
(greedy, end-of-generation banned so every answer is exactly --tokens long), through kaiyuan's engine API.

  shared     one engine, 2N slots; each request carries its adapter set (``GenerationRequest.adapters``) and
             the scheduler decodes the base group and the adapter group in turn, one llama_decode per group
             per step. What ``kaiyuan serve`` does.
  separate   two engines of N slots (the base, and base + LoRA), each with its own scheduler thread, context and
             KV cache, both using all --threads: what serving each model as its own engine would do.

Each variant runs in its own process (peak RSS is its own), rounds interleaved; medians are printed with ratios.

    python benchmarks/adapter_bench.py --threads 2 --streams 4 --tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._serve_peers import bundled_model  # noqa: E402

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue.",
    "Give three tips for learning a language.",
    "Describe a walk in the forest.",
    "What makes a good cup of tea?",
    "Tell me about the history of bicycles.",
    "How do bees make honey?",
    "Describe the city at night.",
]


def child(variant: str, lora: str, threads: int, streams: int, tokens: int) -> None:
    """One measurement in this process: prints a JSON line."""
    import resource

    from kaiyuan.engine import GenerationRequest
    from kaiyuan.engine.llama_cpp import LlamaCppEngine
    from kaiyuan.types import SamplingParams

    model = str(bundled_model())
    common = {"n_ctx": 512, "n_threads": threads, "n_batch": 512}
    rss_before = _rss_mb()
    if variant == "shared":
        shared = LlamaCppEngine(model, n_parallel=2 * streams, **common)
        engines = {"base": shared, "adapter": shared}
        adapters: dict[str, tuple[str, ...] | None] = {"base": (), "adapter": (lora,)}
    else:
        engines = {
            "base": LlamaCppEngine(model, n_parallel=streams, **common),
            "adapter": LlamaCppEngine(model, n_parallel=streams, adapters=[lora], **common),
        }
        adapters = {"base": None, "adapter": None}
    loaded_mb = _rss_mb() - rss_before
    sampling = SamplingParams(temperature=0.0)
    jobs = []
    for kind in ("base", "adapter"):
        engine = engines[kind]
        eog = [t for t in range(engine.n_vocab) if engine.is_eog(t)]
        for i in range(streams):
            prompt = engine.tokenize(PROMPTS[i % len(PROMPTS)], add_special=True)
            jobs.append((engine, GenerationRequest(
                prompt=prompt, max_tokens=tokens, adapters=adapters[kind],
                sampling=SamplingParams(temperature=0.0, logit_bias={t: -1e9 for t in eog}) if eog else sampling,
            )))  # fmt: skip
    start = time.perf_counter()
    handles = [engine.submit(request) for engine, request in jobs]
    generated = sum(sum(1 for _ in handle) for handle in handles)
    wall = time.perf_counter() - start
    for engine in {id(e): e for e in engines.values()}.values():
        engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": generated / wall, "tokens": generated, "loaded_mb": loaded_mb,
                      "peak_rss_mb": peak}))  # fmt: skip


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description="base + adapter serving: shared engine vs separate engines")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4, help="requests per model (base and adapter each)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tests.fixtures.lora_gguf import random_lora

    lora = random_lora(
        str(bundled_model()), Path(tempfile.mkdtemp(prefix="adapter-bench-")) / "lora.gguf", rank=8
    )
    print(f"SmolLM2-135M Q4_1 + rank-8 LoRA, {args.streams} base + {args.streams} adapter requests at once, "
          f"{args.tokens} tokens each, {args.threads} threads, {args.rounds} rounds")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"shared": [], "separate": []}
    for r in range(args.rounds):
        order = ["shared", "separate"] if r % 2 == 0 else ["separate", "shared"]
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(lora), str(args.threads), str(args.streams),
                 str(args.tokens)],
                capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )  # fmt: skip
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for v, rs in results.items()}
    ratios = [
        s["tokens_per_s"] / p["tokens_per_s"]
        for s, p in zip(results["shared"], results["separate"], strict=True)
    ]
    print(f"{'':10} {'tokens/s':>9} {'model+KV MB':>12} {'peak RSS MB':>12}")
    for variant, m in med.items():
        print(f"{variant:10} {m['tokens_per_s']:9.1f} {m['loaded_mb']:12.0f} {m['peak_rss_mb']:12.0f}")
    print(f"shared / separate tokens/s: {statistics.median(ratios):.2f}x (per round: "
          f"{', '.join(f'{x:.2f}' for x in ratios)}); memory saved: "
          f"{med['separate']['peak_rss_mb'] - med['shared']['peak_rss_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
