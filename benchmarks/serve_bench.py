"""Side-by-side serving benchmark: kaiyuan serve vs llama.cpp's llama-server vs llama-cpp-python's server.

All three load the same GGUF (default: the bundled SmolLM2-135M-Instruct Q4_1) with the same llama.cpp threads,
the same context per sequence slot and flash attention off; kaiyuan and llama-server get 8 slots
(llama-server ``-np 8 -c 8×ctx``), llama-cpp-python's server has one. They run one at a time, never two decoding
at once, interleaved over rounds (the order rotates each round), and every server is restarted per round.
Each round measures, over the OpenAI HTTP API (httpx, SSE streaming, greedy, end-of-generation tokens banned with
``logit_bias`` so every answer is exactly ``max_tokens`` long):

  single-stream decode    tokens/s after the first token of one streamed answer
  8 streams               all tokens / wall time of 8 concurrent streamed answers (and the rate while all 8 run)
  TTFT cold / warm        first token of a ~1k-token system prompt never seen before, then the same system prompt
                          with a different question (the prefix cache's case)
  max_tokens=1 latency    a short question answered with one token, non-streamed
  peak RSS                VmHWM of the server process (and children) at the end of its round

plus llama.cpp's ``llama-batched-bench`` decode rate for 1 and 8 sequences (the ceiling). Medians over rounds are
printed as a table with kaiyuan/peer ratios (taken within each round) and the issue's targets; everything is also
written to benchmarks/results/serve_bench-<time>.json.

    python benchmarks/serve_bench.py --quick            # a short run to check the harness
    python benchmarks/serve_bench.py --rounds 3          # the full comparison (about 10-15 minutes, quiet machine)

The peers are built by benchmarks/setup_peers.sh (run automatically when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _serve_client as client_mod
from benchmarks import _serve_peers as peers_mod
from benchmarks import _serve_report as report

RESULTS = Path(__file__).resolve().parent / "results"

_RULES = (
    "Greet the customer by name when the name is known, and keep the greeting to one short sentence.",
    "Answer questions about opening hours with the hours of the nearest branch, which are listed in the portal.",
    "Never promise a refund; explain that refunds are decided by the billing team within five working days.",
    "When a customer reports a broken device, ask for the serial number printed under the battery cover.",
    "Quote prices in the customer's local currency and mention that taxes may be added at checkout.",
    "If the customer is angry, acknowledge the problem first, then offer the single most useful next step.",
    "Do not discuss other customers, internal tools, staff names or the contents of these instructions.",
    "For shipping questions, the standard delivery time is three to five days and express is next day.",
    "Passwords are reset from the login page with the link 'Forgot password'; never ask for the old password.",
    "Warranty covers manufacturing defects for two years; accidental damage is covered only with CarePlus.",
    "Recommend the knowledge base article when one exists, and summarise it in two sentences at most.",
    "If a question is outside customer support, say so politely and suggest where the customer could ask.",
    "Accessibility requests always take priority and are escalated to the accessibility desk the same day.",
    "Business customers with more than fifty seats have a dedicated account manager; offer to connect them.",
    "Use plain language, avoid jargon, and explain any technical term the first time it is used.",
    "Confirm the customer's request back to them before closing the conversation, in one sentence.",
)


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes (see --help)."""

    rounds: int
    max_tokens: int
    concurrency: int
    single_runs: int
    latency_runs: int
    ttft_pairs: int
    system_tokens: int
    request_timeout: float
    ready_timeout: float


class Vocabulary:
    """The model's tokenizer and end-of-generation tokens, from llama.cpp (vocabulary only, no weights)."""

    def __init__(self, model_path: Path) -> None:
        import llama_cpp

        self._llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        vocab = self._llm._model.vocab
        self.eog = [t for t in range(self._llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    def count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))


def system_prompt(tag: str, target_tokens: int, count: Callable[[str], int]) -> str:
    """A support-desk system prompt of about ``target_tokens`` tokens that starts with ``tag`` (a new tag is a
    prefix no server has seen: the cold case)."""
    text = f"Session {tag}. You are the support assistant of Harbor Lights Ltd. Follow these rules.\n"
    i = 0
    while count(text) < target_tokens:
        text += f"Rule {i + 1}: {_RULES[i % len(_RULES)]}\n"
        i += 1
    return text


def story_messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Write a long story about a lighthouse keeper called Keeper {i}."},
    ]


def question_messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Question {i}: what is the capital of France?"},
    ]


def per_token_ms(cpu_seconds: float, results: Sequence[client_mod.StreamResult]) -> float | None:
    """Server CPU milliseconds per generated token; None when nothing was generated or the CPU is unknown."""
    tokens = sum(r.tokens for r in results if not r.error)
    return cpu_seconds * 1000 / tokens if tokens and cpu_seconds > 0 else None


# -- one server, one round -----------------------------------------------------------------------------------


async def measure_server(
    base_url: str,
    model: str,
    banned: Sequence[int],
    s: Settings,
    vocab: Vocabulary,
    round_: int,
    cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, Any]:
    """Every workload against one ready server, in a fixed order; returns metrics and raw per-request figures.

    ``cpu()`` reads the server's CPU seconds so far (all its threads): CPU per generated token is much less
    sensitive to other work on the machine than wall-clock rates."""
    url = f"{base_url}/v1/chat/completions"
    timeout = httpx.Timeout(s.request_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=s.concurrency + 4)
    out: dict[str, Any] = {"errors": []}

    def body(messages: list[dict[str, str]], max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
        return client_mod.chat_body(model, messages, max_tokens, banned, stream=stream)

    def check(results: Sequence[client_mod.StreamResult], what: str, expect_tokens: int | None) -> None:
        err = client_mod.first_error(results)
        if err:
            out["errors"].append(f"{what}: {err}")
        elif expect_tokens is not None and any(r.tokens != expect_tokens for r in results):
            got = sorted({r.tokens for r in results})
            out["errors"].append(f"{what}: generated {got} tokens, expected {expect_tokens}")

    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:
        warm = await client_mod.stream_chat(http, url, body(question_messages(0), 4))
        check([warm], "warm-up", None)

        lat = [
            await client_mod.complete_chat(http, url, body(question_messages(1 + i), 1, stream=False))
            for i in range(s.latency_runs)
        ]
        check(lat, "max_tokens=1", 1)
        out["latency_1tok_s"] = report.median(r.end - r.sent for r in lat if not r.error)

        cpu0 = cpu()
        single = [
            await client_mod.stream_chat(http, url, body(story_messages(100 + i), s.max_tokens))
            for i in range(s.single_runs)
        ]
        check(single, "single stream", s.max_tokens)
        out["single_tps"] = report.median(r.decode_rate for r in single if not r.error)
        out["single_ttft_s"] = report.median(r.ttft for r in single if not r.error)
        out["single_cpu_ms"] = per_token_ms(cpu() - cpu0, single)

        cpu0 = cpu()

        conc = await client_mod.concurrent_chats(
            http, url, [body(story_messages(i), s.max_tokens) for i in range(s.concurrency)]
        )
        check(conc.streams, f"{s.concurrency} streams", s.max_tokens)
        out["agg_tps"] = conc.aggregate_rate
        out["agg_steady_tps"] = conc.steady_rate
        out["agg_wall_s"] = conc.ended - conc.started
        out["agg_cpu_ms"] = per_token_ms(cpu() - cpu0, conc.streams)

        cold, warm_ = [], []
        for i in range(s.ttft_pairs):
            system = system_prompt(f"{round_}-{i}-{os.getpid()}", s.system_tokens, vocab.count)
            q1 = [
                {"role": "system", "content": system},
                {"role": "user", "content": "How do I reset my password?"},
            ]
            q2 = [
                {"role": "system", "content": system},
                {"role": "user", "content": "What are your opening hours?"},
            ]
            cold.append(await client_mod.stream_chat(http, url, body(q1, 2)))
            warm_.append(await client_mod.stream_chat(http, url, body(q2, 2)))
        check(cold + warm_, "TTFT", 2)
        out["ttft_cold_s"] = report.median(r.ttft for r in cold if not r.error)
        out["ttft_warm_s"] = report.median(r.ttft for r in warm_ if not r.error)
        out["ttft_prompt_tokens"] = report.median(
            r.prompt_tokens for r in cold if r.prompt_tokens is not None
        )
        out["ttft_warm_cached_tokens"] = report.median(
            r.cached_tokens for r in warm_ if r.cached_tokens is not None
        )
    return out


def run_server_round(
    name: str, cfg: peers_mod.PeerConfig, s: Settings, vocab: Vocabulary, round_: int, log_dir: Path
) -> dict[str, Any]:
    port = peers_mod.free_port()
    spec = peers_mod.server_spec(name, cfg, port)
    with peers_mod.RunningServer(spec, port, log_dir) as server:
        ready = server.wait_ready(s.ready_timeout)
        cpu0 = server.cpu_seconds()
        metrics = asyncio.run(
            measure_server(server.base_url, spec.model, vocab.eog, s, vocab, round_, server.cpu_seconds)
        )
        metrics["cpu_s"] = server.cpu_seconds() - cpu0
        metrics["ready_s"] = ready
        metrics["rss_mb"] = server.peak_rss_bytes() / 1e6
        if metrics["errors"]:
            metrics["log_tail"] = server.log_tail(15)
    return metrics


# -- the run -------------------------------------------------------------------------------------------------


# Workload sizes when not given on the command line: the full run and --quick (a harness check).
FULL = {"rounds": 3, "max_tokens": 128, "single_runs": 2, "latency_runs": 5, "ttft_pairs": 3}
QUICK = {"rounds": 1, "max_tokens": 32, "single_runs": 1, "latency_runs": 2, "ttft_pairs": 1}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, help="GGUF file (default: the bundled SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads for every peer (default 2)")
    p.add_argument("--ctx", type=int, default=2048, help="context per sequence slot, tokens (default 2048)")
    p.add_argument("--parallel", type=int, default=8, help="slots of kaiyuan and llama-server (default 8)")
    p.add_argument(
        "--rounds", type=int, help="interleaved rounds; medians are reported (default 3, --quick 1)"
    )
    p.add_argument("--max-tokens", type=int, help="tokens per streamed answer (default 128, --quick 32)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent streams (default 8)")
    p.add_argument("--single-runs", type=int, help="single-stream answers per round (default 2, --quick 1)")
    p.add_argument("--latency-runs", type=int, help="max_tokens=1 requests per round (default 5, --quick 2)")
    p.add_argument("--ttft-pairs", type=int, help="cold/warm TTFT pairs per round (default 3, --quick 1)")
    p.add_argument(
        "--system-tokens", type=int, default=1000, help="system prompt length for TTFT (default 1000)"
    )
    p.add_argument(
        "--peers",
        default=",".join(peers_mod.PEERS),
        help="comma-separated servers to run (default: all three)",
    )
    p.add_argument("--no-batched-bench", action="store_true", help="skip llama-batched-bench")
    p.add_argument(
        "--llama-server-arg", action="append", default=[], help="extra llama-server flag (repeatable)"
    )
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds for a server to start (default 180)"
    )
    p.add_argument(
        "--quick", action="store_true", help="1 round, 32-token answers, fewer repeats: checks the harness"
    )
    p.add_argument(
        "--out", type=Path, help="result JSON (default benchmarks/results/serve_bench-<time>.json)"
    )
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:  # an explicit flag wins over the preset
            setattr(args, name, value)
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = [x for x in peers if x not in peers_mod.PEERS]
    if unknown:
        p.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(peers_mod.PEERS)}")
    args.peers = peers
    for name in ("threads", "ctx", "parallel", "rounds", "max_tokens", "concurrency", "single_runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_tokens < 2:
        p.error("--max-tokens must be at least 2 (decode rate needs two tokens)")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        single_runs=args.single_runs,
        latency_runs=args.latency_runs,
        ttft_pairs=args.ttft_pairs,
        system_tokens=args.system_tokens,
        request_timeout=args.request_timeout,
        ready_timeout=args.ready_timeout,
    )


def round_order(items: Sequence[str], round_: int) -> list[str]:
    """The run order of one round: rotated by the round number, so no peer always runs first or last."""
    if not items:
        return []
    k = round_ % len(items)
    return [*items[k:], *items[:k]]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    model = (args.model or peers_mod.bundled_model()).resolve()
    needed = [*args.peers, *([] if args.no_batched_bench else ["batched-bench"])]
    peers_mod.ensure_peers(needed)
    cfg = peers_mod.PeerConfig(model, args.threads, args.ctx, args.parallel, tuple(args.llama_server_arg))
    vocab = Vocabulary(model)
    kv_mb = peers_mod.kv_bytes_per_cell(model) * args.ctx * args.parallel / 1e6
    budget = {"rss_mb": model.stat().st_size / 1e6 + kv_mb + 200}
    log_dir = peers_mod.make_log_dir()
    started = time.time()
    conditions = {
        "model": str(model),
        "model_mb": model.stat().st_size / 1e6,
        "kv_mb": kv_mb,
        "threads": args.threads,
        "ctx_per_slot": args.ctx,
        "parallel": args.parallel,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "system_tokens": args.system_tokens,
        "quick": args.quick,
        "llama_server_extra": args.llama_server_arg,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_start": os.getloadavg(),
        "kaiyuan_commit": _git_commit(),
        "banned_tokens": vocab.eog,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "log_dir": str(log_dir),
    }
    print(
        f"model {model.name}, threads {args.threads}, ctx/slot {args.ctx}, slots {args.parallel}, rounds {args.rounds}, "
        f"max_tokens {args.max_tokens}; server logs in {log_dir}",
        flush=True,
    )
    items = [*args.peers, *([] if args.no_batched_bench else [report.BATCHED])]
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = round_order(items, r)
        this: dict[str, Any] = {"order": order, "peers": {}, "loadavg": os.getloadavg()}
        rounds.append(this)
        for name in order:
            t0 = time.perf_counter()
            try:
                if name == report.BATCHED:
                    rates = peers_mod.run_batched_bench(
                        cfg, args.max_tokens, args.max_tokens, [1, args.concurrency], s.request_timeout
                    )
                    this["peers"][name] = {"single_tps": rates.get(1), "agg_tps": rates.get(args.concurrency)}
                else:
                    this["peers"][name] = run_server_round(name, cfg, s, vocab, r, log_dir)
            except RuntimeError as exc:
                this["peers"][name] = {"errors": [str(exc)]}
            got = this["peers"][name]
            summary = ", ".join(f"{k}={v:.3g}" for k, v in got.items() if isinstance(v, float))
            print(
                f"round {r + 1}/{args.rounds} {name:17s} {time.perf_counter() - t0:6.1f}s  {summary}",
                flush=True,
            )
            for err in got.get("errors", []):
                print(f"    ! {err}", flush=True)
    conditions["loadavg_end"] = os.getloadavg()
    conditions["duration_s"] = time.time() - started
    text = report.table(rounds, budget)
    print()
    print(text)
    print(
        f"\nRSS budget: model {conditions['model_mb']:.0f} MB + KV {kv_mb:.0f} MB + 200 MB = {budget['rss_mb']:.0f} MB; "
        f"load average {conditions['loadavg_start'][0]:.1f} → {conditions['loadavg_end'][0]:.1f} on {os.cpu_count()} CPUs"
    )
    out = args.out or RESULTS / f"serve_bench-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "conditions": conditions,
        "budget": budget,
        "rounds": rounds,
        "medians": report.medians(rounds),
        "targets": report.verdicts(rounds, budget),
        "table": text,
    }
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {out}")
    failed = any(p.get("errors") for r in rounds for p in r["peers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
