"""Side-by-side serving benchmark: kaiyuan serve vs llama.cpp's llama-server vs llama-cpp-python's server.

All three load the same GGUF (default: the bundled SmolLM2-135M-Instruct Q4_1) with the same llama.cpp threads,
the same context per sequence slot and flash attention as ``--flash-attn`` says (off, on, or each peer's own
default); on a CPU with AMX the llama.cpp tools get ``--no-repack`` (their AMX path dies there, and kaiyuan
loads weights that way on such CPUs); kaiyuan and llama-server get 8 slots
(llama-server ``-np 8 -c 8×ctx``), llama-cpp-python's server has one. Each round starts all three afresh (one
after the other), then runs every workload repetition by repetition, going round the servers (the order rotates
each time), so only one server is ever working and a slow minute on a shared machine hits all of them alike; then
stops them and runs llama-batched-bench alone. Measured over the OpenAI HTTP API (httpx, SSE streaming, greedy,
end-of-generation tokens banned with ``logit_bias`` so every answer is exactly ``max_tokens`` long):

  single-stream decode    tokens/s after the first token of one streamed answer
  8 streams               all tokens / wall time of 8 concurrent streamed answers (and the rate while all 8 run)
  TTFT cold / warm        first token of a ~1k-token system prompt never seen before, then the same system prompt
                          with a different question (the prefix cache's case)
  max_tokens=1 latency    a short question answered with one token, non-streamed
  server CPU per token    CPU seconds the server used during the single-stream and 8-stream workloads / tokens
  peak RSS                VmHWM of the server process (and children) at the end of its round

plus llama.cpp's ``llama-batched-bench`` decode rate for 1 and 8 sequences (the ceiling). Medians over rounds are
printed as a table with kaiyuan/peer ratios (taken within each round) and the issue's targets; everything is also
written to benchmarks/results/serve_bench-<time>.json.

    python benchmarks/serve_bench.py --quick            # a short run to check the harness
    python benchmarks/serve_bench.py                     # the full comparison (3 rounds, about 10 minutes)

The peers are built by benchmarks/setup_peers.sh (run automatically when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import cpu_info, git_commit

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
    concurrent_runs: int
    latency_runs: int
    ttft_pairs: int
    system_tokens: int
    stream_context: int
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


SHORT_SYSTEM = "You are a helpful assistant."


def story_messages(i: int, system: str = SHORT_SYSTEM) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Write a long story about a lighthouse keeper called Keeper {i}."},
    ]


def context(s: Settings, tag: str, vocab: Vocabulary) -> str:
    """The concurrent streams' system prompt: short, or with --stream-context N about N tokens that begin with
    ``tag`` (each stream its own, so no server can reuse another stream's prefill: every stream decodes at that
    depth)."""
    return system_prompt(tag, s.stream_context, vocab.count) if s.stream_context else SHORT_SYSTEM


def question_messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SHORT_SYSTEM},
        {"role": "user", "content": f"Question {i}: what is the capital of France?"},
    ]


def per_token_ms(cpu_seconds: float, results: Sequence[client_mod.StreamResult]) -> float | None:
    """Server CPU milliseconds per generated token; None when nothing was generated or the CPU is unknown."""
    tokens = sum(r.tokens for r in results if not r.error)
    return cpu_seconds * 1000 / tokens if tokens and cpu_seconds > 0 else None


T = TypeVar("T")


# -- one round: every server started, the workloads interleaved request by request ---------------------------


@dataclass
class PeerRun:
    """One started server during one round: its HTTP client, the requests it answered, the CPU they cost it."""

    name: str
    server: peers_mod.RunningServer
    model: str
    http: httpx.AsyncClient
    banned: Sequence[int]
    results: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # server CPU s per workload

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/v1/chat/completions"

    def body(self, messages: list[dict[str, str]], max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
        return client_mod.chat_body(self.model, messages, max_tokens, self.banned, stream=stream)

    async def timed(self, workload: str, work: Awaitable[T]) -> T:
        """Await ``work``, adding the server's CPU time meanwhile to ``workload``."""
        cpu0 = self.server.cpu_seconds()
        result = await work
        self.cpu[workload] += self.server.cpu_seconds() - cpu0
        return result


async def _latency(p: PeerRun, i: int, s: Settings, tag: str, vocab: Vocabulary) -> None:
    body = p.body(question_messages(1 + i), 1, stream=False)
    p.results["latency"].append(await p.timed("latency", client_mod.complete_chat(p.http, p.url, body)))


async def _single(p: PeerRun, i: int, s: Settings, tag: str, vocab: Vocabulary) -> None:
    body = p.body(story_messages(100 + i), s.max_tokens)
    p.results["single"].append(await p.timed("single", client_mod.stream_chat(p.http, p.url, body)))


async def _concurrent(p: PeerRun, i: int, s: Settings, tag: str, vocab: Vocabulary) -> None:
    bodies = [
        p.body(story_messages(i * s.concurrency + j, context(s, f"{tag}-s{i}-{j}", vocab)), s.max_tokens)
        for j in range(s.concurrency)
    ]
    p.results["concurrent"].append(
        await p.timed("concurrent", client_mod.concurrent_chats(p.http, p.url, bodies))
    )


async def _ttft(p: PeerRun, i: int, s: Settings, tag: str, vocab: Vocabulary) -> None:
    # a new system prompt for this pair (the cold case), then the same one with another question (warm)
    system = system_prompt(f"{tag}-{i}", s.system_tokens, vocab.count)
    for kind, question in (("cold", "How do I reset my password?"), ("warm", "What are your opening hours?")):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        p.results[kind].append(await client_mod.stream_chat(p.http, p.url, p.body(messages, 2)))


WORKLOADS: tuple[tuple[str, Callable[..., Awaitable[None]], str], ...] = (
    ("latency", _latency, "latency_runs"),
    ("single", _single, "single_runs"),
    ("concurrent", _concurrent, "concurrent_runs"),
    ("ttft", _ttft, "ttft_pairs"),
)


async def measure_round(peers: Sequence[PeerRun], s: Settings, vocab: Vocabulary, round_: int) -> None:
    """Each workload, repetition by repetition, going round the servers (the order rotates every repetition),
    so one request never overlaps another server's and a slow minute hits every server alike."""
    tag = f"{round_}-{os.getpid()}"
    for p in peers:  # warm-up, not measured
        p.results["warm-up"].append(
            await client_mod.stream_chat(p.http, p.url, p.body(question_messages(0), 4))
        )
    for _, run, count in WORKLOADS:
        for i in range(getattr(s, count)):
            for p in round_order(peers, round_ + i):
                await run(p, i, s, tag, vocab)


def summarize(p: PeerRun, s: Settings) -> dict[str, Any]:
    """The round's figures of one server (medians over its repetitions) and what went wrong."""
    r = p.results
    errors: list[str] = []

    def ok(what: str, results: Sequence[client_mod.StreamResult], expect: int | None) -> list[Any]:
        err = client_mod.first_error(results)
        if err:
            errors.append(f"{what}: {err}")
        elif expect is not None and any(x.tokens != expect for x in results):
            errors.append(
                f"{what}: generated {sorted({x.tokens for x in results})} tokens, expected {expect}"
            )
        return [x for x in results if not x.error]

    ok("warm-up", r["warm-up"], None)
    lat = ok("max_tokens=1", r["latency"], 1)
    single = ok("single stream", r["single"], s.max_tokens)
    conc = r["concurrent"]
    ok(f"{s.concurrency} streams", [x for c in conc for x in c.streams], s.max_tokens)
    cold, warm = ok("TTFT cold", r["cold"], 2), ok("TTFT warm", r["warm"], 2)
    return {
        "errors": errors,
        "latency_1tok_s": report.median(x.end - x.sent for x in lat),
        "single_tps": report.median(x.decode_rate for x in single),
        "single_ttft_s": report.median(x.ttft for x in single),
        "single_cpu_ms": per_token_ms(p.cpu["single"], r["single"]),
        "agg_tps": report.median(c.aggregate_rate for c in conc),
        "agg_steady_tps": report.median(c.steady_rate for c in conc),
        "agg_wall_s": report.median(c.ended - c.started for c in conc),
        "agg_cpu_ms": per_token_ms(p.cpu["concurrent"], [x for c in conc for x in c.streams]),
        "ttft_cold_s": report.median(x.ttft for x in cold),
        "ttft_warm_s": report.median(x.ttft for x in warm),
        "ttft_prompt_tokens": report.median(x.prompt_tokens for x in cold),
        "ttft_warm_cached_tokens": report.median(x.cached_tokens for x in warm),
    }


def run_round(
    names: Sequence[str],
    cfg: peers_mod.PeerConfig,
    s: Settings,
    vocab: Vocabulary,
    round_: int,
    log_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Start every server (one after the other), measure them interleaved, read their peak RSS, stop them all."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        started: list[tuple[str, peers_mod.RunningServer, str, float]] = []
        for name in names:
            port = peers_mod.free_port()
            spec = peers_mod.server_spec(name, cfg, port)
            server = stack.enter_context(peers_mod.RunningServer(spec, port, log_dir))
            try:
                started.append((name, server, spec.model, server.wait_ready(s.ready_timeout)))
            except RuntimeError as exc:
                out[name] = {"errors": [str(exc)]}
        cpu0 = {name: server.cpu_seconds() for name, server, _, _ in started}

        async def measure() -> list[PeerRun]:
            timeout = httpx.Timeout(s.request_timeout, connect=10.0)
            # idle connections are dropped before a server's own keep-alive timeout can close them under us
            limits = httpx.Limits(max_connections=s.concurrency + 4, keepalive_expiry=2.0)
            async with contextlib.AsyncExitStack() as clients:
                peers = []
                for name, server, model, _ in started:
                    http = await clients.enter_async_context(
                        httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
                    )
                    peers.append(PeerRun(name, server, model, http, vocab.eog))
                await measure_round(peers, s, vocab, round_)
                return peers

        for p in asyncio.run(measure()):
            figures = summarize(p, s)
            figures["cpu_s"] = p.server.cpu_seconds() - cpu0[p.name]
            figures["ready_s"] = next(ready for name, _, _, ready in started if name == p.name)
            figures["rss_mb"] = p.server.peak_rss_bytes() / 1e6
            if figures["errors"]:
                figures["log_tail"] = p.server.log_tail(15)
            out[p.name] = figures
    return out


# -- the run -------------------------------------------------------------------------------------------------


# Workload sizes when not given on the command line: the full run and --quick (a harness check).
FULL = {
    "rounds": 3,
    "max_tokens": 128,
    "single_runs": 3,
    "concurrent_runs": 2,
    "latency_runs": 5,
    "ttft_pairs": 3,
}
QUICK = {
    "rounds": 1,
    "max_tokens": 32,
    "single_runs": 1,
    "concurrent_runs": 1,
    "latency_runs": 2,
    "ttft_pairs": 1,
}


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
    p.add_argument("--single-runs", type=int, help="single-stream answers per round (default 3, --quick 1)")
    p.add_argument(
        "--concurrent-runs",
        type=int,
        help="times the concurrent streams run per round (default 2, --quick 1)",
    )
    p.add_argument("--latency-runs", type=int, help="max_tokens=1 requests per round (default 5, --quick 2)")
    p.add_argument("--ttft-pairs", type=int, help="cold/warm TTFT pairs per round (default 3, --quick 1)")
    p.add_argument(
        "--system-tokens", type=int, default=1000, help="system prompt length for TTFT (default 1000)"
    )
    p.add_argument(
        "--stream-context",
        type=int,
        default=0,
        help="give each concurrent stream its own system prompt of about N tokens, so they decode at that depth "
        "(default 0: a one-line system prompt; decoding cost grows with depth, and flash attention's differently)",
    )
    p.add_argument(
        "--peers",
        default=",".join(peers_mod.PEERS),
        help="comma-separated servers to run (default: all three)",
    )
    p.add_argument(
        "--flash-attn",
        choices=peers_mod.FLASH_SETTINGS,
        default="off",
        help="flash attention for every peer (off, on), or 'defaults': each peer's own default (default off)",
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
    for name in (
        "threads",
        "ctx",
        "parallel",
        "rounds",
        "max_tokens",
        "concurrency",
        "single_runs",
        "concurrent_runs",
    ):
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
        concurrent_runs=args.concurrent_runs,
        latency_runs=args.latency_runs,
        ttft_pairs=args.ttft_pairs,
        system_tokens=args.system_tokens,
        stream_context=args.stream_context,
        request_timeout=args.request_timeout,
        ready_timeout=args.ready_timeout,
    )


def round_order(items: Sequence[T], round_: int) -> list[T]:
    """The order of one round (or repetition): rotated by its number, so no peer always goes first or last."""
    if not items:
        return []
    k = round_ % len(items)
    return [*items[k:], *items[:k]]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # unwinds like Ctrl-C, so the servers' process groups are stopped on the way out
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    model = (args.model or peers_mod.bundled_model()).resolve()
    needed = [*args.peers, *([] if args.no_batched_bench else ["batched-bench"])]
    peers_mod.ensure_peers(needed)
    cfg = peers_mod.PeerConfig(
        model, args.threads, args.ctx, args.parallel, tuple(args.llama_server_arg), args.flash_attn
    )
    vocab = Vocabulary(model)
    kv_mb = peers_mod.kv_bytes_per_cell(model) * args.ctx * args.parallel / 1e6
    budget = {"rss_mb": model.stat().st_size / 1e6 + kv_mb + 200}
    log_dir = peers_mod.make_log_dir()
    started = time.time()
    cpu = cpu_info()
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
        "stream_context": args.stream_context,
        "quick": args.quick,
        "llama_server_extra": args.llama_server_arg,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu.model,
        "cpu_flags": list(cpu.flags),
        "flash_attn": args.flash_attn,
        "peer_argv": {name: peers_mod.server_spec(name, cfg, 0).argv for name in args.peers},
        "loadavg_start": os.getloadavg(),
        "kaiyuan_commit": git_commit(),
        "banned_tokens": vocab.eog,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "log_dir": str(log_dir),
    }
    print(
        f"model {model.name}, threads {args.threads}, ctx/slot {args.ctx}, slots {args.parallel}, rounds {args.rounds}, "
        f"max_tokens {args.max_tokens}, stream context {args.stream_context or 'short'}, "
        f"flash attention {args.flash_attn}; server logs in {log_dir}",
        flush=True,
    )
    print(f"CPU: {conditions['cpu']} ({os.cpu_count()} CPUs; {' '.join(conditions['cpu_flags'])})")
    for name, peer_argv in conditions["peer_argv"].items():
        print(f"  {name}: {' '.join(Path(a).name if a.startswith('/') else a for a in peer_argv)}")
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        this: dict[str, Any] = {"order": round_order(args.peers, r), "peers": {}, "loadavg": os.getloadavg()}
        rounds.append(this)
        t0 = time.perf_counter()
        if args.peers:
            this["peers"].update(run_round(this["order"], cfg, s, vocab, r, log_dir))
        servers_s = time.perf_counter() - t0
        if not args.no_batched_bench:  # with every server stopped
            try:
                rates = peers_mod.run_batched_bench(
                    cfg, args.max_tokens, args.max_tokens, [1, args.concurrency], s.request_timeout
                )
                this["peers"][report.BATCHED] = {
                    "single_tps": rates.get(1),
                    "agg_tps": rates.get(args.concurrency),
                }
            except RuntimeError as exc:
                this["peers"][report.BATCHED] = {"errors": [str(exc)]}
        print(
            f"round {r + 1}/{args.rounds}: servers {servers_s:.0f}s, all {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        for name, got in this["peers"].items():
            summary = ", ".join(f"{k}={v:.3g}" for k, v in got.items() if isinstance(v, float))
            print(f"  {name:17s} {summary}", flush=True)
            for err in got.get("errors", []):
                print(f"    ! {err}", flush=True)
    conditions["loadavg_end"] = os.getloadavg()
    conditions["duration_s"] = time.time() - started
    text = report.table(rounds, budget)
    print()
    print(
        f"CPU: {conditions['cpu']} ({' '.join(conditions['cpu_flags'])}); flash attention: {args.flash_attn}"
    )
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
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
