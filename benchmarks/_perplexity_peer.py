"""llama.cpp's ``llama-perplexity`` as eval_bench.py runs it: the command lines, one run, and its figures parsed.

Owns the peer's flags (the same text, context and threads as kaiyuan; weight repacking off, as kaiyuan loads
weights, see ``NO_REPACK``), running it as a process with the shared libraries next to it, and reading what it
prints: the final perplexity, the KL-divergence statistics of ``--kl-divergence`` and llama.cpp's own timings.
Must not know kaiyuan or how the figures are compared.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / ".build" / "bin"
PERPLEXITY = BIN / "llama-perplexity"
SETUP = HERE / "setup_peers.sh"

# kaiyuan loads weights without llama.cpp's extra buffer types (engine/llama_cpp/_model.py: on this AMX CPU the
# AMX path segfaults); llama-perplexity's --no-repack is the same switch (common_params.no_extra_bufts).
NO_REPACK = "--no-repack"

_FLOAT = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class PeerRun:
    """One llama-perplexity run: what it printed, parsed (None where a figure was not printed)."""

    command: list[str]
    wall_s: float  # the whole process: load, tokenize, score
    returncode: int
    output: str
    ppl: float | None = None  # "Final estimate" (plain run) or "Mean PPL(Q)" (--kl-divergence)
    ppl_stderr: float | None = None
    chunks: int | None = None
    base_ppl: float | None = None  # --kl-divergence: "Mean PPL(base)"
    ppl_ratio: float | None = None  # --kl-divergence: "Mean PPL(Q)/PPL(base)"
    kl: dict[str, float] = field(default_factory=dict)  # mean, max, p99, median
    same_top_p: float | None = None  # fraction, --kl-divergence
    scoring_s: float | None = (
        None  # plain run: from "calculating perplexity" to "Final estimate" (its log times)
    )

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.ppl is not None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def command(
    model: Path,
    text: Path,
    *,
    ctx: int,
    threads: int,
    base_file: Path | None = None,
    kl: bool = False,
    extra: Sequence[str] = (),
    binary: Path = PERPLEXITY,
) -> list[str]:
    """The llama-perplexity command line: a plain run, the base run that saves the reference's log-probabilities
    (``base_file``), or a ``--kl-divergence`` run against that file (``kl``)."""
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "-t", str(threads)]
    cmd += ["-tb", str(threads), NO_REPACK]
    if base_file is not None:
        cmd += ["--kl-divergence-base", str(base_file)]
    if kl:
        cmd.append("--kl-divergence")
    return [*cmd, *extra]


def _find(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, flags=re.MULTILINE)


def _float(pattern: str, text: str, group: int = 1) -> float | None:
    m = _find(pattern, text)
    return float(m.group(group)) if m else None


def _log_time(message: str, text: str) -> float | None:
    """Seconds since start of the log line holding ``message``: llama.cpp's log prefixes each line with
    ``minutes.seconds.milliseconds.microseconds`` (e.g. ``0.01.157.960 I Final estimate: …``)."""
    m = _find(rf"^(\d+)\.(\d+)\.(\d+)\.(\d+) \w [^\n]*?{re.escape(message)}", text)
    if m is None:
        return None
    minutes, seconds, millis, micros = (int(g) for g in m.groups())
    return minutes * 60 + seconds + millis / 1e3 + micros / 1e6


def parse(cmd: list[str], wall_s: float, returncode: int, output: str) -> PeerRun:
    """The figures in llama-perplexity's output (stdout and stderr together)."""
    final = _find(rf"Final estimate: PPL = {_FLOAT} \+/- {_FLOAT}", output)
    mean_q = _find(rf"^Mean PPL\(Q\)\s*:\s*{_FLOAT}\s*±\s*{_FLOAT}", output)
    ppl_m = final or mean_q
    chunks = _find(r"(?:calculating perplexity|computing) over (\d+) chunks", output)
    kl = {
        key: value
        for key, pattern in (
            ("mean", rf"^Mean\s+KLD:\s*{_FLOAT}"),
            ("max", rf"^Maximum KLD:\s*{_FLOAT}"),
            ("p99", rf"^99\.0%\s+KLD:\s*{_FLOAT}"),
            ("median", rf"^Median\s+KLD:\s*{_FLOAT}"),
        )
        if (value := _float(pattern, output)) is not None
    }
    same_top = _float(rf"^Same top p:\s*{_FLOAT}", output)
    began, ended = _log_time("calculating perplexity over", output), _log_time("Final estimate", output)
    return PeerRun(
        command=cmd,
        wall_s=wall_s,
        returncode=returncode,
        output=output,
        ppl=float(ppl_m.group(1)) if ppl_m else None,
        ppl_stderr=float(ppl_m.group(2)) if ppl_m else None,
        chunks=int(chunks.group(1)) if chunks else None,
        base_ppl=_float(rf"^Mean PPL\(base\)\s*:\s*{_FLOAT}", output),
        ppl_ratio=_float(rf"^Mean PPL\(Q\)/PPL\(base\)\s*:\s*{_FLOAT}", output),
        kl=kl,
        same_top_p=same_top / 100 if same_top is not None else None,
        scoring_s=ended - began if began is not None and ended is not None else None,
    )


def run(cmd: list[str], timeout: float) -> PeerRun:
    """Run one llama-perplexity command and parse what it printed."""
    began = time.perf_counter()
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        # the shared ggml/llama libraries are next to the binary
        env={**os.environ, "LD_LIBRARY_PATH": str(Path(cmd[0]).parent)},
        check=False,
    )
    return parse(cmd, time.perf_counter() - began, proc.returncode, proc.stdout)


def ensure_built(binary: Path = PERPLEXITY) -> None:
    """Build llama-perplexity with setup_peers.sh when it is missing."""
    if not binary.exists():
        print(f"building llama-perplexity with {SETUP} (several minutes) …", flush=True)
        subprocess.run(["bash", str(SETUP)], check=True)
