"""Scale-out benchmark: kaiyuan on Ray Serve with 2 replicas vs 1 replica vs plain kaiyuan serve (no Ray).

Servers, started one after the other (only one works at a time), all on the same GGUF (default: the bundled
SmolLM2-135M-Instruct Q4_1) with ``--threads 1`` (llama.cpp threads per process / per replica):

  plain        kaiyuan serve --threads 1 --parallel 16
  ray-1        kaiyuan serve --replicas 1 --threads 1 --parallel 16          (the cost of Ray in the path)
  ray-1x8      kaiyuan serve --replicas 1 --threads 1 --parallel 8           (one replica like each of ray-2's)
  ray-2        kaiyuan serve --replicas 2 --threads 1 --parallel 8           (16 slots in all)
  ray-2-rr     kaiyuan serve --replicas 2 --threads 1 --parallel 8 --routing round_robin   (TTFT pairs only)

Workloads, over the OpenAI HTTP API (greedy, end-of-generation tokens banned so every answer is exactly
``--max-tokens`` long):

  16 streams     aggregate tokens/s of 16 concurrent streamed answers of 128 tokens (median of --runs)
  TTFT warm      a ~1k-token system prompt never seen before (cold), then the same system prompt with another
                 question (warm), --ttft-pairs times; on 2 replicas with prefix routing vs round robin (which
                 sends each warm request to the other replica)

plain, ray-1, ray-1x8 and ray-2 run side by side: all are started (one after the other), then each 16-stream run goes round them (the
order rotates), so a busy minute on a shared machine hits all of them alike; ray-2-rr runs after them, alone.

Printed: the CPU, the table and the ratios against the issue's targets (2 replicas >= 1.7x one replica's aggregate
rate, and against one replica of the same size: batching 16 sequences on one core is more tokens per core than 8;
Ray with one replica >= 0.9x plain; prefix routing's warm TTFT <= 0.1x round robin's). Two replicas can
only beat one where there are cores for both: on a machine whose cores are busy with other work the ratio says
so. Results also go to benchmarks/results/ray_bench-<time>.json.

    python benchmarks/ray_bench.py --runs 1 --ttft-pairs 3     # brief
    python benchmarks/ray_bench.py                              # 3 runs, 6 TTFT pairs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import cpu_info, git_commit
from benchmarks.serve_bench import Vocabulary, story_messages, system_prompt

from benchmarks import _serve_client as client_mod
from benchmarks import _serve_peers as peers_mod

RESULTS = Path(__file__).resolve().parent / "results"

SERVERS: dict[str, list[str]] = {
    "plain": ["--parallel", "16"],
    "ray-1": ["--replicas", "1", "--parallel", "16"],
    "ray-1x8": ["--replicas", "1", "--parallel", "8"],
    "ray-2": ["--replicas", "2", "--parallel", "8"],
    "ray-2-rr": ["--replicas", "2", "--parallel", "8", "--routing", "round_robin"],
}


def spec(name: str, port: int, home: Path, ctx: int) -> peers_mod.ServerSpec:
    argv = [sys.executable, "-m", "kaiyuan", "serve", "smollm2", "--port", str(port), "--threads", "1"]
    argv += ["--ctx", str(ctx), "--max-queue", "64", *SERVERS[name]]
    return peers_mod.ServerSpec(name, argv, model="smollm2", env={"KAIYUAN_HOME": str(home)})


async def streams(url: str, n: int, max_tokens: int, banned: Sequence[int]) -> float | None:
    bodies = [client_mod.chat_body("smollm2", story_messages(i), max_tokens, banned) for i in range(n)]
    async with httpx.AsyncClient(timeout=600, trust_env=False) as http:
        result = await client_mod.concurrent_chats(http, url, bodies)
    error = client_mod.first_error(result.streams)
    if error:
        print(f"    error: {error}", file=sys.stderr)
    return result.aggregate_rate


async def ttft_pairs(
    url: str, pairs: int, vocab: Vocabulary, tag: str, banned: Sequence[int]
) -> dict[str, list]:
    out: dict[str, list[float]] = {"cold": [], "warm": [], "warm_cached": []}
    async with httpx.AsyncClient(timeout=600, trust_env=False) as http:
        for i in range(pairs):
            system = system_prompt(f"{tag}-{i}", 1000, vocab.count)
            for kind, question in (
                ("cold", "How do I reset my password?"),
                ("warm", "What are your opening hours?"),
            ):
                messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
                r = await client_mod.stream_chat(
                    http, url, client_mod.chat_body("smollm2", messages, 2, banned)
                )
                if r.ttft is not None:
                    out[kind].append(r.ttft)
                if kind == "warm":
                    out["warm_cached"].append(float(r.cached_tokens or 0))
    return out


def start(name: str, args: argparse.Namespace, log_dir: Path) -> peers_mod.RunningServer:
    port = peers_mod.free_port()
    home = log_dir / f"home-{name}"
    home.mkdir(exist_ok=True)
    server = peers_mod.RunningServer(spec(name, port, home, args.ctx), port, log_dir)
    return server


def measure(
    names: Sequence[str], args: argparse.Namespace, vocab: Vocabulary, log_dir: Path
) -> dict[str, Any]:
    """Start ``names`` together, then rotate the 16-stream runs over them; TTFT pairs on the 2-replica ones."""
    rows: dict[str, dict[str, Any]] = {name: {"rates": []} for name in names}
    with contextlib.ExitStack() as stack:
        urls = {}
        for name in names:  # one after the other: two Ray clusters starting at once on 2 cores time out
            server = stack.enter_context(start(name, args, log_dir))
            rows[name]["ready_s"] = server.wait_ready(args.ready_timeout)
            urls[name] = f"{server.base_url}/v1/chat/completions"
            print(f"  {name}: ready in {rows[name]['ready_s']:.0f}s", file=sys.stderr)
        throughput = [n for n in names if n != "ray-2-rr"]
        for name in throughput:
            asyncio.run(streams(urls[name], 2, 8, vocab.eog))  # warm-up: first decode, threads, connections
        for run in range(args.runs if throughput else 0):
            for name in throughput[run % len(throughput) :] + throughput[: run % len(throughput)]:
                rate = asyncio.run(streams(urls[name], args.streams, args.max_tokens, vocab.eog))
                rows[name]["rates"].append(rate)
                print(f"  {name}: {args.streams} streams: {rate}", file=sys.stderr)
        for name in names:
            good = [r for r in rows[name]["rates"] if r]
            rows[name]["rate"] = statistics.median(good) if good else None
            if name.startswith("ray-2"):
                tag = f"{name}-{time.time()}"
                rows[name]["ttft"] = asyncio.run(
                    ttft_pairs(urls[name], args.ttft_pairs, vocab, tag, vocab.eog)
                )
    return rows


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def report(rows: dict[str, dict[str, Any]]) -> list[str]:
    def rate(name: str) -> float | None:
        return rows.get(name, {}).get("rate")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "n/a"

    lines = [
        "| server | 16 streams x 128 tokens, tokens/s | TTFT cold (s) | TTFT warm (s) | warm cached tokens |"
    ]
    lines.append("|---|---|---|---|---|")
    for name in SERVERS:
        row = rows.get(name, {})
        t = row.get("ttft", {})
        cold, warm, cached = (
            _median(t.get("cold", [])),
            _median(t.get("warm", [])),
            _median(t.get("warm_cached", [])),
        )
        cells = [
            name,
            f"{row['rate']:.1f}" if row.get("rate") else "-",
            f"{cold:.2f}" if cold is not None else "-",
            f"{warm:.3f}" if warm is not None else "-",
            f"{cached:.0f}" if cached is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    prefix = _median(rows.get("ray-2", {}).get("ttft", {}).get("warm", []))
    robin = _median(rows.get("ray-2-rr", {}).get("ttft", {}).get("warm", []))
    lines.append("")
    lines.append(f"2 replicas / 1 replica (target >= 1.7x):        {ratio(rate('ray-2'), rate('ray-1'))}")
    lines.append(
        f"2 replicas / 1 replica of the same size (8 slots): {ratio(rate('ray-2'), rate('ray-1x8'))}"
    )
    lines.append(f"2 replicas / plain:                             {ratio(rate('ray-2'), rate('plain'))}")
    lines.append(f"Ray, 1 replica / plain (target >= 0.9x):        {ratio(rate('ray-1'), rate('plain'))}")
    lines.append(f"warm TTFT, prefix routing / round robin (target <= 0.1x): {ratio(prefix, robin)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="16-stream runs per server (median)")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ttft-pairs", type=int, default=6, help="cold/warm pairs on the 2-replica servers")
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot, tokens")
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of " + ", ".join(SERVERS)
    )
    args = parser.parse_args(argv)
    cpu = cpu_info()
    print(f"CPU: {cpu.describe()}; llama.cpp threads per process/replica: 1", file=sys.stderr)
    vocab = Vocabulary(peers_mod.bundled_model())
    log_dir = peers_mod.make_log_dir()
    print(f"logs in {log_dir}", file=sys.stderr)
    names = args.servers.split(",")
    rows = measure([n for n in names if n != "ray-2-rr"], args, vocab, log_dir)
    if "ray-2-rr" in names:
        rows.update(measure(["ray-2-rr"], args, vocab, log_dir))
    lines = report(rows)
    print(f"CPU: {cpu.describe()}")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ray_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    conditions = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu.model,
        "cpu_flags": list(cpu.flags),
        "commit": git_commit(),
        "args": vars(args),
    }
    out.write_text(json.dumps({"conditions": conditions, "rows": rows, "table": lines}, indent=2))
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
