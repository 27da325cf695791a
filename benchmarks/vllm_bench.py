"""kaiyuan on vLLM vs plain ``vllm serve`` vs kaiyuan on llama.cpp, side by side in one run, over HTTP.

The same Hugging Face folder (the bundled SmolLM2 dequantized to bf16 with ``kaiyuan.convert.gguf_to_hf``) is
served by ``kaiyuan serve --engine vllm`` and by vLLM's own OpenAI server at identical settings (context, sequence
slots, dtype, KV cache, block size, threads); kaiyuan's llama.cpp engine serves the GGUF those weights came from.
Each peer answers, in turns per round: one stream, 8 concurrent streams (greedy, end-of-generation banned so every
answer is exactly ``--tokens`` long), and time to first token on a ~1k-token system prompt, cold (a new prefix)
and warm (the same prefix again). A second table runs ``kaiyuan serve --engine vllm`` and ``vllm serve`` each at
its defaults (no tuning flags: what a user gets first). Prints the CPU, every peer's command line, medians and the
ratios kaiyuan/vLLM per table; a peer that cannot start (vLLM's CPU defaults may not fit a machine) is reported.

    python benchmarks/vllm_bench.py                      # 2 rounds, 128 tokens, all cores
    python benchmarks/vllm_bench.py --rounds 1 --tokens 32 --threads 1   # a quick look

Target (issue 12): kaiyuan on vLLM >= 0.95x plain vLLM for one and for 8 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import cpu_info
from benchmarks._serve_client import chat_body, concurrent_chats, stream_chat
from benchmarks._serve_peers import RunningServer, ServerSpec, bundled_model, free_port, make_log_dir
from benchmarks.serve_bench import story_messages, system_prompt

PEERS = ("kaiyuan-vllm", "vllm-serve", "kaiyuan-vllm-defaults", "vllm-serve-defaults", "kaiyuan-llama.cpp")
# Two tables: the same settings for every peer, and each vLLM server as a user starts it with no tuning flags.
GROUPS = {
    "identical settings": ("kaiyuan-vllm", "vllm-serve", "kaiyuan-llama.cpp"),
    "each at its defaults": ("kaiyuan-vllm-defaults", "vllm-serve-defaults"),
}


@dataclass
class Conditions:
    threads: int  # CPU cores each server may use
    ctx: int  # context per sequence (tokens)
    parallel: int  # sequence slots
    tokens: int  # generated tokens per answer
    kv_gib: int  # vLLM's CPU KV cache (GiB)
    block_size: int  # vLLM KV block (tokens)
    system_tokens: int  # length of the TTFT system prompt


@dataclass
class Peer:
    name: str
    spec: ServerSpec
    results: dict[str, list[float]] = field(default_factory=dict)
    failure: str = ""  # why it did not start (a server at its defaults may not fit this machine)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.results.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.results.get(key)
        return statistics.median(values) if values else None


def prepare(workdir: Path) -> tuple[Path, Path, list[int]]:
    """The HF folder, a kaiyuan home holding it (as ``smollm2-hf``) and the GGUF, and the end-of-generation ids."""
    from kaiyuan.convert import gguf_to_hf

    gguf = bundled_model()
    folder = workdir / "smollm2-hf"
    if not folder.is_dir():
        gguf_to_hf(gguf, folder, dtype="bfloat16")
    home = workdir / "home"
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "kaiyuan", "import", str(folder), "--name", "smollm2-hf:bf16", "--force"],
        env=env,
        check=True,
        capture_output=True,
    )
    config = json.loads((folder / "generation_config.json").read_text())
    eos = config.get("eos_token_id")
    banned = sorted({*([eos] if isinstance(eos, int) else eos or []), 0, 2})
    return folder, home, banned


def specs(c: Conditions, folder: Path, home: Path) -> list[Peer]:
    cores = ",".join(str(i) for i in range(c.threads))
    vllm_env = {
        "VLLM_CPU_KVCACHE_SPACE": str(c.kv_gib),
        "VLLM_CPU_OMP_THREADS_BIND": cores,
        "KAIYUAN_HOME": str(home),
    }
    kaiyuan = [sys.executable, "-m", "kaiyuan", "serve"]
    common = ["--ctx", str(c.ctx), "--parallel", str(c.parallel), "--threads", str(c.threads)]
    peers = []
    for name in PEERS:
        port = free_port()
        if name == "kaiyuan-vllm":
            argv = [*kaiyuan, "smollm2-hf:bf16", "--port", str(port), "--engine", "vllm", *common]
            argv += ["--dtype", "bfloat16", "--kv-cache-gib", str(c.kv_gib)]
            spec = ServerSpec(name, argv, model="smollm2-hf:bf16", env=vllm_env)
        elif name == "vllm-serve":
            argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "model"]
            argv += ["--dtype", "bfloat16", "--max-model-len", str(c.ctx), "--max-num-seqs", str(c.parallel)]
            argv += ["--enable-prefix-caching", "--enforce-eager", "--block-size", str(c.block_size)]
            argv += ["--seed", "0"]  # stats on, as vLLM's default and as kaiyuan runs it (it reads them)
            spec = ServerSpec(name, argv, model="model", env=vllm_env)
        elif name == "kaiyuan-llama.cpp":
            argv = [*kaiyuan, "smollm2", "--port", str(port), *common, "--flash-attn", "off"]
            spec = ServerSpec(name, argv, model="smollm2", env={"KAIYUAN_HOME": str(home)})
        elif name == "kaiyuan-vllm-defaults":  # only what names the model, the port and the engine
            argv = [*kaiyuan, "smollm2-hf:bf16", "--port", str(port), "--engine", "vllm"]
            spec = ServerSpec(name, argv, model="smollm2-hf:bf16", env={"KAIYUAN_HOME": str(home)})
        else:  # vllm-serve-defaults: only what names the model and the port
            argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "model"]
            spec = ServerSpec(name, argv, model="model", env={})
        peers.append(Peer(name, spec))
    return peers


async def measure(peer: Peer, port: int, c: Conditions, banned: Sequence[int], round_: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    model = peer.spec.model
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
        await stream_chat(client, url, chat_body(model, story_messages(999), 8, banned))  # warm-up
        one = await stream_chat(client, url, chat_body(model, story_messages(round_), c.tokens, banned))
        if one.error is None and one.end > one.sent:
            peer.add("single tok/s", one.tokens / (one.end - one.sent))
        bodies = [chat_body(model, story_messages(100 * round_ + i), c.tokens, banned) for i in range(8)]
        eight = await concurrent_chats(client, url, bodies)
        peer.add("8 streams agg tok/s", eight.aggregate_rate)
        prompt = system_prompt(f"{peer.name}-{round_}", c.system_tokens, lambda text: len(text) // 4)
        messages = [{"role": "system", "content": prompt}, {"role": "user", "content": "Hello, who are you?"}]
        cold = await stream_chat(client, url, chat_body(model, messages, 4, banned))
        warm = await stream_chat(client, url, chat_body(model, messages, 4, banned))
        peer.add("TTFT cold s", cold.ttft)
        peer.add("TTFT warm s", warm.ttft)


def command_line(peer: Peer) -> str:
    """The peer's flags and the environment it adds, as a person would type them."""
    argv = peer.spec.argv[1:] if peer.spec.argv[0] == sys.executable else peer.spec.argv
    env = " ".join(f"{k}={v}" for k, v in peer.spec.env.items() if k.startswith("VLLM_"))
    return f"{env + ' ' if env else ''}{' '.join(argv)}"


def report(peers: Sequence[Peer], c: Conditions) -> str:
    keys = ["single tok/s", "8 streams agg tok/s", "TTFT cold s", "TTFT warm s"]
    lines = [f"CPU: {cpu_info().describe()}", f"conditions (identical settings): {c}"]
    for title, names in GROUPS.items():
        group = [p for p in peers if p.name in names]
        if not group:
            continue
        ours = next((p for p in group if p.name.startswith("kaiyuan-vllm")), None)
        theirs = next((p for p in group if p.name.startswith("vllm-serve")), None)
        lines += ["", f"## {title}", *(f"{p.name}: {command_line(p)}" for p in group), ""]
        lines += [
            "| metric | " + " | ".join(p.name for p in group) + " | kaiyuan on vLLM / vllm serve |",
            "|---|" + "---|" * (len(group) + 1),
        ]
        for key in keys:
            row = [f"{v:.3f}" if (v := p.median(key)) is not None else "-" for p in group]
            mine = ours.median(key) if ours else None
            peer = theirs.median(key) if theirs else None
            ratio = "-"
            if mine and peer:
                # higher is better for rates, lower for latencies: print "how many times as good"
                ratio = f"{(mine / peer) if 'tok/s' in key else (peer / mine):.2f}x"
            lines.append(f"| {key} | " + " | ".join(row) + f" | {ratio} |")
    for p in peers:
        if p.failure:
            lines.append(f"{p.name} did not serve: {p.failure}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--kv-gib", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kaiyuan-vllm-bench")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated subset of " + ", ".join(PEERS)
    )
    args = parser.parse_args(argv)
    c = Conditions(args.threads, args.ctx, 8, args.tokens, args.kv_gib, 32, 1000)
    args.workdir.mkdir(parents=True, exist_ok=True)
    folder, home, banned = prepare(args.workdir)
    wanted = set(args.peers.split(","))
    peers = [p for p in specs(c, folder, home) if p.name in wanted]
    logs = make_log_dir()
    for round_ in range(args.rounds):
        for peer in peers[round_ % len(peers) :] + peers[: round_ % len(peers)]:
            port = int(peer.spec.argv[peer.spec.argv.index("--port") + 1])
            if peer.failure:
                continue
            try:
                with RunningServer(peer.spec, port, logs) as server:
                    server.wait_ready(900)
                    asyncio.run(measure(peer, port, c, banned, round_))
            except (RuntimeError, TimeoutError, OSError) as exc:
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [
                    type(exc).__name__
                ]
                peer.failure = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
            got = ", ".join(f"{k} {v[-1]:.3f}" for k, v in peer.results.items()) or peer.failure
            print(f"round {round_ + 1}: {peer.name}: {got}", file=sys.stderr, flush=True)
    print(report(peers, c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
