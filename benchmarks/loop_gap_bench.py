"""Do arriving requests stall running streams? The gap between tokens of 2 streams while 6 requests arrive.

kaiyuan serve (the bundled SmolLM2 by default) runs 2 streamed answers (greedy, end-of-generation banned, so they
run on); once both stream, 6 requests arrive at once, and the gaps between consecutive tokens of the 2 streams
are collected until the 6 are answered. Three cases, in rotating order each round:

  alone    nothing arrives (a window of 2 s): the base gap of 2 streams
  plain    6 chat requests without a grammar (max_tokens 8, 12, .. 28: short, so that preparing them, not
           decoding them, is what the streams feel)
  schema   the same 6 requests with a json_schema response_format: the largest schema of
           benchmarks/data/json_schemas, each request a variant never seen before (a new description), so every
           one compiles its grammar cold (and each has its own max_tokens, so each fits it to its own budget)
  long     6 chat requests without a grammar, max_tokens 48 each: 8 sequences decode for a while
  warm     the same 6 with the largest schema as the server has already seen it (grammar compiled at warm-up):
           what the streams feel is grammar-constrained sampling in their batch, not preparation

Request preparation (template, tokenizer, grammar compilation) that runs on the server's event loop delays every
stream's next SSE event while it runs; the target (issue 14) is p99 gap with schema requests ≤ 1.3 × plain.
The p50 gap of warm against long is what constrained sampling costs the other sequences of the batch.
Prints per-round p50/p99/max gaps and the medians over rounds, and writes benchmarks/results/loop_gap-<time>.json.

    python benchmarks/loop_gap_bench.py --rounds 3      # about a minute on a 2-core machine
    python benchmarks/loop_gap_bench.py --source /tmp/old/src   # the server from another source tree (before/after)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from benchmarks.serve_bench import Vocabulary

from benchmarks import _serve_client as client_mod
from benchmarks import _serve_peers as peers_mod

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMAS = Path(__file__).resolve().parent / "data" / "json_schemas"
CASES = ("alone", "plain", "schema", "long", "warm")
DECODE_TOKENS = 48  # each arrival of the long and warm cases
STREAM_QUESTION = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
ARRIVING_QUESTION = [{"role": "user", "content": "Describe a small example record."}]
ALONE_WINDOW_S = 2.0


def largest_schema() -> dict[str, Any]:
    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
    return max(schemas, key=lambda s: len(json.dumps(s)))


def arriving_bodies(case: str, model: str, schema: dict[str, Any], round_no: int) -> list[dict[str, Any]]:
    bodies = []
    for i in range(6):
        body: dict[str, Any] = {"model": model, "messages": ARRIVING_QUESTION, "temperature": 0.0}
        if case in ("long", "warm"):
            body["max_tokens"] = DECODE_TOKENS
        else:
            body["max_tokens"] = 8 + 4 * i  # short answers: the arrival (preparation) is what is measured
        if case == "schema":
            variant = {**schema, "description": f"round {round_no} request {i} at {time.time_ns()}"}
            body["response_format"] = schema_format(variant)
        if case == "warm":
            body["response_format"] = schema_format(schema)  # the server compiled it at warm-up
        bodies.append(body)
    return bodies


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def stream_times(client: httpx.AsyncClient, url: str, body: dict[str, Any], times: list[float]) -> None:
    """Stream one answer, appending the arrival time of every chunk that carries content to ``times``."""
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            obj = client_mod.parse_sse_data(line)
            if obj and any((c.get("delta") or {}).get("content") for c in obj.get("choices") or []):
                times.append(time.perf_counter())


async def one_case(
    client: httpx.AsyncClient,
    url: str,
    case: str,
    model: str,
    banned: list[int],
    schema: dict[str, Any],
    round_no: int,
) -> dict[str, Any]:
    body = client_mod.chat_body(model, STREAM_QUESTION, 1000, banned)
    times: list[list[float]] = [[], []]
    streams = [asyncio.ensure_future(stream_times(client, url, body, t)) for t in times]
    while min(len(t) for t in times) < 8:  # both streams run
        await asyncio.sleep(0.02)
        if any(s.done() for s in streams):
            raise RuntimeError(f"a stream ended early: {next(s for s in streams if s.done()).exception()}")
    start = time.perf_counter()
    errors: list[str] = []
    if case == "alone":
        await asyncio.sleep(ALONE_WINDOW_S)
    else:
        arrivals = arriving_bodies(case, model, schema, round_no)
        answers = await asyncio.gather(*(client_mod.complete_chat(client, url, b) for b in arrivals))
        errors = [a.error for a in answers if a.error]
    end = time.perf_counter()
    for s in streams:
        s.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    gaps = [(b - a) * 1000 for t in times for a, b in itertools.pairwise(t) if a >= start and b <= end]
    if not gaps:
        raise RuntimeError(f"{case}: no token arrived in the window")
    return {
        "case": case,
        "window_s": end - start,
        "gaps": len(gaps),
        "p50_ms": percentile(gaps, 0.50),
        "p99_ms": percentile(gaps, 0.99),
        "max_ms": max(gaps),
        "errors": errors,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model_path = Path(args.model) if args.model else peers_mod.bundled_model()
    banned = Vocabulary(model_path).eog
    schema = largest_schema()
    cfg = peers_mod.PeerConfig(model_path=model_path, threads=args.threads, ctx_per_slot=1024, parallel=8)
    port = peers_mod.free_port()
    spec = peers_mod.server_spec("kaiyuan", cfg, port)
    if args.source:  # e.g. an older checkout's src/, for a before/after comparison on the same machine
        spec.env["PYTHONPATH"] = str(Path(args.source).resolve())
    rounds: list[list[dict[str, Any]]] = []
    with peers_mod.RunningServer(spec, port, peers_mod.make_log_dir()) as server:
        server.wait_ready(120)
        url = f"{server.base_url}/v1/chat/completions"
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
            await client_mod.complete_chat(
                client, url, client_mod.chat_body(spec.model, ARRIVING_QUESTION, 4, [])
            )
            warm_up = client_mod.chat_body(spec.model, ARRIVING_QUESTION, DECODE_TOKENS, [])
            warm_up["response_format"] = schema_format(schema)
            await client_mod.complete_chat(client, url, warm_up)
            for r in range(args.rounds):
                order = CASES[r % len(CASES) :] + CASES[: r % len(CASES)]
                found = [await one_case(client, url, c, spec.model, banned, schema, r) for c in order]
                rounds.append(sorted(found, key=lambda x: CASES.index(x["case"])))
                for row in rounds[-1]:
                    print(
                        f"round {r + 1} {row['case']:>6}: p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms"
                        f"  max {row['max_ms']:6.1f} ms  ({row['gaps']} gaps, {row['window_s']:.2f} s)"
                        + (f"  errors: {row['errors'][0]}" if row["errors"] else ""),
                        flush=True,
                    )
    return {"rounds": rounds, "threads": args.threads, "model": str(model_path), "source": args.source}


def report(result: dict[str, Any]) -> None:
    medians = {
        case: {
            key: statistics.median(row[key] for rnd in result["rounds"] for row in rnd if row["case"] == case)
            for key in ("p50_ms", "p99_ms", "max_ms")
        }
        for case in CASES
    }
    print("\n| case | p50 gap | p99 gap | max gap |\n|---|---|---|---|")
    for case in CASES:
        m = medians[case]
        print(f"| {case} | {m['p50_ms']:.1f} ms | {m['p99_ms']:.1f} ms | {m['max_ms']:.1f} ms |")
    ratio = medians["schema"]["p99_ms"] / medians["plain"]["p99_ms"]
    print(f"\np99 schema / plain: {ratio:.2f}x (target <= 1.3x)")
    decode_ratio = medians["warm"]["p50_ms"] / medians["long"]["p50_ms"]
    print(f"p50 warm / long: {decode_ratio:.2f}x (what grammar-constrained sampling costs the batch)")
    result["medians"] = medians
    result["ratio_p99_schema_plain"] = ratio
    result["ratio_p50_warm_long"] = decode_ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of the server")
    parser.add_argument(
        "--source", help="run the server from this source tree (PYTHONPATH), e.g. an older src/"
    )
    parser.add_argument("--model", help="a GGUF (default: the bundled SmolLM2-135M-Instruct Q4_1)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    result = asyncio.run(run(args))
    report(result)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loop_gap-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
