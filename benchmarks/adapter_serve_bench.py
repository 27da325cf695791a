#!/usr/bin/env python3
"""Serving a base model and a LoRA adapter of it at once, over HTTP: ``kaiyuan serve`` vs llama.cpp's llama-server.

Both load the bundled SmolLM2-135M (Q4_1) and the same random rank-8 GGUF LoRA, with the same threads, slots and
context per slot. kaiyuan serves the adapter as a store model (``kaiyuan import LORA --base smollm2``) on the base's
engine; llama-server loads it with ``--lora … --lora-init-without-apply`` and a request turns it on with
``"lora": [{"id": 0, "scale": 1}]`` (its documented per-request LoRA). Per round and server:

  check        greedy answers of the base and of the adapter alone: they must differ (the LoRA is applied)
  base only    N streams of the base at once (the reference)
  mixed        N base + N adapter streams at once: all tokens / wall time, the rate while all ran, and the
               slowest stream's time to first token (a server that runs one adapter set at a time makes the
               other set wait for it)

Answers are exactly --tokens long (end-of-generation tokens banned with ``logit_bias``). Rounds alternate which
server goes first; medians and kaiyuan/llama-server ratios are printed.

    python benchmarks/adapter_serve_bench.py --threads 2 --streams 4 --tokens 64 --rounds 3

The peer is built by benchmarks/setup_peers.sh (run automatically when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.adapter_bench import PROMPTS  # noqa: E402  (the same prompts as the engine-level benchmark)
from benchmarks.serve_bench import Vocabulary  # noqa: E402

from benchmarks import _serve_client as client  # noqa: E402
from benchmarks import _serve_peers as peers  # noqa: E402


def kaiyuan_spec(cfg: peers.PeerConfig, port: int, home: Path) -> peers.ServerSpec:
    spec = peers.server_spec("kaiyuan", cfg, port)
    spec.argv[spec.argv.index("smollm2") + 1 : spec.argv.index("smollm2") + 1] = [
        "smollm2-lora"
    ]  # preload both
    spec.env = {**spec.env, "KAIYUAN_HOME": str(home)}
    return spec


def request(server: str, adapter: bool, prompt: str, tokens: int, banned: list[int]) -> dict[str, Any]:
    model = {"kaiyuan": "smollm2-lora" if adapter else "smollm2", "llama-server": "model"}[server]
    body = client.chat_body(model, [{"role": "user", "content": prompt}], tokens, banned)
    if server == "llama-server":
        body["lora"] = [{"id": 0, "scale": 1.0 if adapter else 0.0}]
    return body


async def measure(server: str, url: str, args: argparse.Namespace, banned: list[int]) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600, trust_env=False) as http:
        chat = f"{url}/v1/chat/completions"
        alone = []
        for adapter in (False, True):
            body = request(server, adapter, PROMPTS[0], 24, [])
            body["stream"] = False
            body.pop("stream_options", None)
            reply = (await http.post(chat, json=body)).json()
            alone.append(reply["choices"][0]["message"]["content"])
        if alone[0] == alone[1]:
            raise SystemExit(f"{server}: the adapter answer equals the base answer; the LoRA is not applied")
        n = args.streams
        base = await client.concurrent_chats(
            http, chat, [request(server, False, PROMPTS[i % 8], args.tokens, banned) for i in range(n)]
        )
        bodies = [
            request(server, i % 2 == 1, PROMPTS[(i // 2) % 8], args.tokens, banned) for i in range(2 * n)
        ]
        mixed = await client.concurrent_chats(http, chat, bodies)
    for result in (base, mixed):
        error = client.first_error(result.streams)
        if error:
            raise SystemExit(f"{server}: {error}")
    return {
        "base_only": base.aggregate_rate or 0.0,
        "mixed": mixed.aggregate_rate or 0.0,
        "mixed_steady": mixed.steady_rate or 0.0,
        "worst_ttft": max(s.ttft or 0.0 for s in mixed.streams),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="base + LoRA adapter serving: kaiyuan serve vs llama-server")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4, help="concurrent requests per model")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ctx", type=int, default=512, help="context per slot (tokens)")
    args = parser.parse_args()
    peers.ensure_peers(["llama-server"])

    from tests.fixtures.lora_gguf import random_lora

    work = Path(tempfile.mkdtemp(prefix="adapter-serve-bench-"))
    model = peers.bundled_model()
    lora = random_lora(model, work / "lora.gguf", rank=8)
    home = work / "home"
    subprocess.run(
        [sys.executable, "-m", "kaiyuan", "import", str(lora), "--base", "smollm2", "--name", "smollm2-lora"],
        env={**os.environ, "KAIYUAN_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    banned = Vocabulary(model).eog
    cfg = peers.PeerConfig(
        model_path=model,
        threads=args.threads,
        ctx_per_slot=args.ctx,
        parallel=2 * args.streams,
        llama_server_extra=("--lora", str(lora), "--lora-init-without-apply"),
    )
    print(f"SmolLM2-135M Q4_1 + rank-8 LoRA; {args.streams} base + {args.streams} adapter streams of "
          f"{args.tokens} tokens; {args.threads} threads, {cfg.parallel} slots, ctx {args.ctx}/slot; "
          f"{args.rounds} rounds")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"kaiyuan": [], "llama-server": []}
    logs = peers.make_log_dir()
    for r in range(args.rounds):
        order = ["kaiyuan", "llama-server"] if r % 2 == 0 else ["llama-server", "kaiyuan"]
        for name in order:
            port = peers.free_port()
            spec = kaiyuan_spec(cfg, port, home) if name == "kaiyuan" else peers.server_spec(name, cfg, port)
            with peers.RunningServer(spec, port, logs) as server:
                server.wait_ready(180)
                results[name].append(asyncio.run(measure(name, server.base_url, args, banned)))
    keys = ["base_only", "mixed", "mixed_steady", "worst_ttft"]
    print(f"{'':14} {'base only':>10} {'base+adapter':>13} {'(all running)':>14} {'slowest TTFT':>13}")
    for name, runs in results.items():
        med = [statistics.median(run[k] for run in runs) for k in keys]
        print(f"{name:14} {med[0]:10.1f} {med[1]:13.1f} {med[2]:14.1f} {med[3]:12.2f}s")
    print("(tokens/s; '(all running)' is 0 when the streams never all ran at once)")
    for k in keys:
        ratios = [
            a[k] / b[k] for a, b in zip(results["kaiyuan"], results["llama-server"], strict=True) if b[k]
        ]
        if ratios:
            print(f"kaiyuan / llama-server, {k}: {statistics.median(ratios):.2f}x "
                  f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip
    print(f"server logs: {logs}")


if __name__ == "__main__":
    main()
