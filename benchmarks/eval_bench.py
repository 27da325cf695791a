"""Side-by-side evaluation benchmark: ``kaiyuan eval`` vs llama.cpp's ``llama-perplexity``, same model, text,
context and threads.

Makes an F32 GGUF of the bundled SmolLM2-135M-Instruct (its Q4_1 weights dequantized: Q4_1 → Hugging Face float32
→ GGUF F32 with ``kaiyuan convert``) and quantizes that F32 to each of ``--quants`` (default Q4_0, Q4_1, Q5_K_M,
Q8_0), in a store of its own (``benchmarks/.build/eval-home``, kept between runs). Then:

  figures     each quantization (and the F32 against itself) against the F32: kaiyuan's ``evaluate(--against)``
              vs ``llama-perplexity --kl-divergence`` on the log-probabilities its base run saved from the F32:
              perplexity (target: within 1%), mean KL (target: within 5%), top-1 agreement, PPL ratio
  throughput  plain perplexity of the F32 and of the Q4_1, ``--rounds`` times, kaiyuan and llama-perplexity taking
              turns (the order alternates): tokens scored per second (target: kaiyuan ≥ 0.9× llama-perplexity)

Both score the same file (a copy of the text without its final newline, which llama-perplexity's ``-f`` strips),
load weights without llama.cpp's repacked/AMX buffer types (kaiyuan always does; ``--no-repack`` for the peer) and
run ``--threads`` threads. Tables go to stdout with the conditions (CPU, its flags, threads, load average, each peer
command line); everything also goes to benchmarks/results/eval_bench-<time>.json.

    python benchmarks/eval_bench.py --quick      # 1 throughput round (checks the harness, a few minutes)
    python benchmarks/eval_bench.py              # 3 throughput rounds

llama-perplexity is built by benchmarks/setup_peers.sh (run automatically when it is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import cpu_info, git_commit

from benchmarks import _perplexity_peer as peer

RESULTS = Path(__file__).resolve().parent / "results"
HOME = Path(__file__).resolve().parent / ".build" / "eval-home"
QUANTS = ("Q4_0", "Q4_1", "Q5_K_M", "Q8_0")
F32_HF = "smollm2:135m-f32-hf"
F32 = "smollm2:135m-f32"

# llama.cpp's published figures (tools/perplexity/README.md of the llama.cpp vendored in llama-cpp-python 0.3.36:
# "LLaMA 3 8b Scoreboard" and "LLaMA 2 vs. LLaMA 3" on WikiText-2, against FP16, no imatrix): quantization ->
# (Llama-3-8B PPL ratio, mean KL, same top p; Llama-2-7B mean KL, same top p). None: not published.
PUBLISHED: dict[str, tuple[float | None, float, float | None, float | None, float | None]] = {
    "Q8_0": (1.000425, 0.001355, 0.97674, 0.000369, 0.98846),
    "Q5_K_M": (6.288607 / 6.231636, 0.010762, None, None, None),
    "Q4_K_M": (1.028160, 0.031273, 0.91901, 0.012686, 0.94665),
    "Q4_1": (6.682737 / 6.231636, 0.071683, None, None, None),
    "Q4_0": (6.700147 / 6.231636, 0.071940, None, None, None),
}

PPL_TOLERANCE = 0.01  # kaiyuan's perplexity within 1% of llama-perplexity's
KL_TOLERANCE = 0.05  # mean KL within 5%
SPEED_TARGET = 0.9  # tokens scored per second ≥ 0.9× llama-perplexity


def quant_name(quant: str) -> str:
    return f"{F32}-{quant.lower()}"


# -- conditions ----------------------------------------------------------------------------------------------


# -- the models ----------------------------------------------------------------------------------------------


def prepare_models(store: Any, settings: Any, quants: Sequence[str]) -> dict[str, Path]:
    """The F32 and its quantizations in ``store`` (made when missing): label -> GGUF path."""
    from kaiyuan.convert import convert_model

    def make(source: str, to: str, name: str, **kw: Any) -> None:
        if store.exists(name):
            return
        print(f"  making {name} from {source} …", flush=True)
        convert_model(store, settings, source, to, name=name, **kw)

    make("smollm2", "hf", F32_HF, dtype="float32")
    make(F32_HF, "gguf", F32, quant="F32")
    for quant in quants:
        make(F32_HF, "gguf", quant_name(quant), quant=quant)
    paths = {"F32": Path(store.resolve(F32).model_path)}
    paths.update({q: Path(store.resolve(quant_name(q)).model_path) for q in quants})
    return paths


def same_text_for_both(source: Path, folder: Path) -> Path:
    """A copy of ``source`` without its final newline: llama-perplexity's ``-f`` drops it, kaiyuan keeps it."""
    data = source.read_bytes()
    if data.endswith(b"\n"):
        data = data[:-1]
    copy = folder / source.name
    copy.write_bytes(data)
    return copy


# -- kaiyuan's side ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KaiyuanRun:
    wall_s: float  # the evaluate() call: load, tokenize, score
    result: Any  # kaiyuan.eval.EvalResult


def kaiyuan_eval(
    store: Any, name: str, text: Path, ctx: int, threads: int, against: str | None
) -> KaiyuanRun:
    from kaiyuan.eval import evaluate

    began = time.perf_counter()
    result = evaluate(store, name, text=text, n_ctx=ctx, n_threads=threads, against=against, record=False)
    return KaiyuanRun(time.perf_counter() - began, result)


# -- figures: each quantization against the F32 --------------------------------------------------------------


def rel(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def figures(
    store: Any, paths: dict[str, Path], text: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Every model against the F32, by both tools, plus the F32's base run."""
    base_file = work / "f32.kld"
    base_cmd = peer.command(
        paths["F32"],
        text,
        ctx=args.ctx,
        threads=args.threads,
        base_file=base_file,
        extra=args.peer_arg,
        binary=args.llama_perplexity,
    )
    print(
        "  llama-perplexity base run (F32, saves its log-probabilities):\n    " + " ".join(base_cmd),
        flush=True,
    )
    base = peer.run(base_cmd, args.timeout)
    out: dict[str, Any] = {"base": _peer_dict(base), "rows": {}}
    if not base.ok:
        print(f"    ! llama-perplexity failed (exit {base.returncode}):\n{base.tail()}", flush=True)
        return out
    for label in ("F32", *args.quants):
        name = F32 if label == "F32" else quant_name(label)
        k = kaiyuan_eval(store, name, text, args.ctx, args.threads, against=F32)
        cmd = peer.command(
            paths[label],
            text,
            ctx=args.ctx,
            threads=args.threads,
            base_file=base_file,
            kl=True,
            extra=args.peer_arg,
            binary=args.llama_perplexity,
        )
        p = peer.run(cmd, args.timeout)
        c = k.result.comparison
        row = {
            "kaiyuan": {
                "ppl": c.model.ppl,
                "ppl_stderr": c.model.ppl_stderr,
                "reference_ppl": c.reference.ppl,
                "ppl_ratio": c.ppl_ratio,
                "kl": {"mean": c.kl_mean, "median": c.kl_median, "p99": c.kl_p99, "max": c.kl_max},
                "top1": c.top1_agreement,
                "tokens": k.result.tokens,
                "windows": c.model.windows,
                "tokens_scored": c.model.tokens_scored,
                "wall_s": k.wall_s,
            },
            "llama-perplexity": _peer_dict(p),
        }
        out["rows"][label] = row
        kl_k, kl_p = c.kl_mean, p.kl.get("mean")
        print(
            f"  {label:7s} PPL {c.model.ppl:.4f} / {p.ppl or float('nan'):.4f}   mean KL {kl_k:.6f} / "
            f"{kl_p if kl_p is not None else float('nan'):.6f}   top-1 {c.top1_agreement:.4f} / "
            f"{p.same_top_p if p.same_top_p is not None else float('nan'):.4f}   (kaiyuan / llama-perplexity)",
            flush=True,
        )
        if not p.ok:
            print(f"    ! llama-perplexity failed (exit {p.returncode}):\n{p.tail()}", flush=True)
    return out


def _peer_dict(p: peer.PeerRun) -> dict[str, Any]:
    return {
        "command": p.command,
        "returncode": p.returncode,
        "wall_s": p.wall_s,
        "ppl": p.ppl,
        "ppl_stderr": p.ppl_stderr,
        "chunks": p.chunks,
        "base_ppl": p.base_ppl,
        "ppl_ratio": p.ppl_ratio,
        "kl": p.kl,
        "top1": p.same_top_p,
        "scoring_s": p.scoring_s,
        **({} if p.ok else {"output_tail": p.tail(30)}),
    }


# -- throughput: plain perplexity, taking turns --------------------------------------------------------------


def throughput(
    store: Any, paths: dict[str, Path], text: Path, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Per model, one entry per round: kaiyuan's and llama-perplexity's scoring rates and wall times."""
    labels = [label for label in ("F32", "Q4_1") if label in paths]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for r in range(args.rounds):
        for label in labels:
            name = F32 if label == "F32" else quant_name(label)
            cmd = peer.command(
                paths[label],
                text,
                ctx=args.ctx,
                threads=args.threads,
                extra=args.peer_arg,
                binary=args.llama_perplexity,
            )
            entry: dict[str, Any] = {"loadavg": os.getloadavg()[0]}
            order = ("kaiyuan", "llama-perplexity") if r % 2 == 0 else ("llama-perplexity", "kaiyuan")
            for who in order:
                if who == "kaiyuan":
                    k = kaiyuan_eval(store, name, text, args.ctx, args.threads, against=None)
                    ppl = k.result.perplexity
                    entry["kaiyuan"] = {
                        "ppl": ppl.ppl,
                        "tokens_scored": ppl.tokens_scored,
                        "scoring_s": ppl.seconds,
                        "wall_s": k.wall_s,
                        "rate": ppl.tokens_scored / ppl.seconds,
                    }
                else:
                    p = peer.run(cmd, args.timeout)
                    scored = (p.chunks or 0) * (args.ctx - args.ctx // 2 - 1)
                    entry["llama-perplexity"] = {
                        **_peer_dict(p),
                        "tokens_scored": scored,
                        "scoring_s": p.scoring_s,
                        "rate": scored / p.scoring_s if p.scoring_s and p.ok else None,
                    }
            k_rate, p_rate = entry["kaiyuan"]["rate"], entry["llama-perplexity"]["rate"]
            entry["ratio"] = rel(k_rate, p_rate)
            entry["wall_ratio"] = rel(entry["llama-perplexity"]["wall_s"], entry["kaiyuan"]["wall_s"])
            runs[label].append(entry)
            print(
                f"  round {r + 1}/{args.rounds} {label:5s} kaiyuan {k_rate:.0f} tokens scored/s, llama-perplexity "
                f"{p_rate or float('nan'):.0f} (ratio {entry['ratio'] or float('nan'):.3f}); wall "
                f"{entry['kaiyuan']['wall_s']:.1f}s / {entry['llama-perplexity']['wall_s']:.1f}s; "
                f"load {entry['loadavg']:.1f}",
                flush=True,
            )
    return runs


# -- the report ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "NO")


def figures_table(fig: dict[str, Any]) -> str:
    """kaiyuan vs llama-perplexity, model by model, with the 1% (PPL) and 5% (mean KL) targets."""
    lines = [
        "| vs F32 | PPL kaiyuan | PPL llama-perplexity | ratio | mean KL kaiyuan | mean KL llama-perplexity "
        "| ratio | top-1 kaiyuan | same top p llama-perplexity | PPL ≤1% | KL ≤5% |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in fig.get("rows", {}).items():
        k, p = row["kaiyuan"], row["llama-perplexity"]
        ppl_r = rel(k["ppl"], p["ppl"])
        kl_k, kl_p = k["kl"]["mean"], p["kl"].get("mean")
        kl_r = rel(kl_k, kl_p)
        # a model against itself: kaiyuan's KL is exactly 0, the peer's is the rounding of its 16-bit log-probs
        kl_ok = None if kl_p is None or kl_p < 1e-4 else abs(kl_r - 1) <= KL_TOLERANCE if kl_r else False
        lines.append(
            f"| {label} | {k['ppl']:.4f} | {_fmt(p['ppl'], '.4f')} | {_fmt(ppl_r, '.4f')} | {kl_k:.6f} | "
            f"{_fmt(kl_p, '.6f')} | {_fmt(kl_r, '.3f')} | {k['top1'] * 100:.2f}% | "
            f"{_fmt(p['top1'] * 100 if p['top1'] is not None else None, '.2f')}% | "
            f"{_verdict(None if ppl_r is None else abs(ppl_r - 1) <= PPL_TOLERANCE)} | {_verdict(kl_ok)} |"
        )
    return "\n".join(lines)


def quant_table(fig: dict[str, Any]) -> str:
    """The quantization cost (kaiyuan's figures) next to llama.cpp's published figures for larger models."""
    lines = [
        "| quantization | PPL | PPL ratio | mean KL | median KL | p99 KL | top-1 | Llama-3-8B PPL ratio | "
        "Llama-3-8B mean KL | Llama-3-8B same top p | Llama-2-7B mean KL |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in fig.get("rows", {}).items():
        k = row["kaiyuan"]
        pub = PUBLISHED.get(label, (None, None, None, None, None))
        lines.append(
            f"| {label} | {k['ppl']:.4f} | {k['ppl_ratio']:.4f} | {k['kl']['mean']:.4f} | {k['kl']['median']:.4f} | "
            f"{k['kl']['p99']:.4f} | {k['top1'] * 100:.2f}% | {_fmt(pub[0], '.4f')} | {_fmt(pub[1], '.4f')} | "
            f"{_fmt(pub[2] * 100 if pub[2] else None, '.2f')}{'%' if pub[2] else ''} | {_fmt(pub[3], '.4f')} |"
        )
    q4km = PUBLISHED["Q4_K_M"]
    lines.append(
        f"| (Q4_K_M, not measured here) | | | | | | | {q4km[0]:.4f} | {q4km[1]:.4f} | {q4km[2] * 100:.2f}% | "
        f"{q4km[3]:.4f} |"
    )
    return "\n".join(lines)


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def throughput_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| model | kaiyuan tokens scored/s | llama-perplexity tokens scored/s | kaiyuan / llama-perplexity | "
        "≥ 0.9× | wall kaiyuan (s) | wall llama-perplexity (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, entries in runs.items():
        ratio = median([e["ratio"] for e in entries])
        lines.append(
            f"| {label} | {_fmt(median([e['kaiyuan']['rate'] for e in entries]), '.0f')} | "
            f"{_fmt(median([e['llama-perplexity']['rate'] for e in entries]), '.0f')} | {_fmt(ratio, '.3f')} | "
            f"{_verdict(None if ratio is None else ratio >= SPEED_TARGET)} | "
            f"{_fmt(median([e['kaiyuan']['wall_s'] for e in entries]), '.2f')} | "
            f"{_fmt(median([e['llama-perplexity']['wall_s'] for e in entries]), '.2f')} |"
        )
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--text", type=Path, help="UTF-8 text to score (default: kaiyuan's shipped corpus)")
    p.add_argument("--ctx", type=int, default=512, help="window size in tokens, both tools (default 512)")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads, both tools (default 1)")
    p.add_argument(
        "--rounds", type=int, help="throughput rounds; medians are reported (default 3, --quick 1)"
    )
    p.add_argument(
        "--quants", default=",".join(QUANTS), help=f"quantizations of the F32 (default {','.join(QUANTS)})"
    )
    p.add_argument("--home", type=Path, default=HOME, help=f"kaiyuan home for the models (default {HOME})")
    p.add_argument("--no-figures", action="store_true", help="skip the KL comparison (throughput only)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput rounds")
    p.add_argument(
        "--peer-arg",
        action="append",
        default=[],
        help="extra llama-perplexity flag (repeatable, e.g. --peer-arg=-b --peer-arg=512)",
    )
    p.add_argument(
        "--llama-perplexity",
        type=Path,
        default=peer.PERPLEXITY,
        help=f"the llama-perplexity binary, its shared libraries beside it (default {peer.PERPLEXITY})",
    )
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per llama-perplexity run (default 900)"
    )
    p.add_argument("--quick", action="store_true", help="1 throughput round: checks the harness")
    p.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/eval_bench-<time>.json)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    from kaiyuan.export import QUANT_CHOICES

    args.quants = [q.strip().upper() for q in args.quants.split(",") if q.strip()]
    unknown = [q for q in args.quants if q not in QUANT_CHOICES or q == "F32"]
    if unknown:
        p.error(f"unknown quantization(s) {', '.join(unknown)}; choose from {', '.join(QUANT_CHOICES[:-1])}")
    for name in ("ctx", "threads", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.ctx < 16 or args.ctx % 2:
        p.error("--ctx must be an even number of at least 16 tokens")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    peer.ensure_built(args.llama_perplexity)
    from importlib.metadata import version

    from kaiyuan.config import load_settings
    from kaiyuan.eval import read_corpus
    from kaiyuan.store import ModelStore

    settings = load_settings(home=args.home, threads=args.threads)
    store = ModelStore.from_settings(settings)
    started = time.time()
    print(f"models in {args.home}", flush=True)
    paths = prepare_models(store, settings, args.quants)
    cpu = cpu_info()
    corpus = read_corpus(args.text)
    conditions: dict[str, Any] = {
        "cpu": dataclasses.asdict(cpu),
        "threads": args.threads,
        "ctx": args.ctx,
        "text": {"name": corpus.name, "digest": corpus.digest},
        "models": {label: str(path) for label, path in paths.items()},
        "kaiyuan_commit": git_commit(),
        "llama_cpp_python": version("llama-cpp-python"),
        "peer": str(args.llama_perplexity),
        "peer_extra": args.peer_arg,
        "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
    }
    print(
        f"CPU {cpu.describe()}; threads {args.threads}, ctx "
        f"{args.ctx}, text {corpus.name}; llama.cpp of llama-cpp-python {conditions['llama_cpp_python']} on both "
        f"sides (kaiyuan in-process, llama-perplexity built by setup_peers.sh); load average "
        f"{conditions['loadavg_start'][0]:.1f}",
        flush=True,
    )
    result: dict[str, Any] = {"conditions": conditions}
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        text = same_text_for_both(args.text or Path(_default_corpus()), Path(tmp))
        if not args.no_figures:
            print("figures (each model against the F32):", flush=True)
            result["figures"] = figures(store, paths, text, args, Path(tmp))
        if not args.no_throughput:
            print("throughput (plain perplexity, taking turns):", flush=True)
            print(
                "  llama-perplexity: "
                + " ".join(
                    peer.command(
                        paths["F32"],
                        text,
                        ctx=args.ctx,
                        threads=args.threads,
                        extra=args.peer_arg,
                        binary=args.llama_perplexity,
                    )
                ),
                flush=True,
            )
            result["throughput"] = throughput(store, paths, text, args)
    conditions["loadavg_end"] = os.getloadavg()
    conditions["duration_s"] = time.time() - started
    print()
    if "figures" in result:
        print("kaiyuan vs llama-perplexity, each model against the F32:\n")
        print(figures_table(result["figures"]))
        print(
            "\nThe quantization cost (kaiyuan's figures) next to llama.cpp's published figures (WikiText-2, vs FP16):\n"
        )
        print(quant_table(result["figures"]))
    if "throughput" in result:
        print(
            "\nThroughput, median over rounds (tokens scored / scoring time: kaiyuan's decode + reduction of each "
            "window; llama-perplexity's log times from 'calculating perplexity' to 'Final estimate'; wall: the whole "
            "run, load included):\n"
        )
        print(throughput_table(result["throughput"]))
    print(
        f"\nthreads {args.threads}, ctx {args.ctx}; load average {conditions['loadavg_start'][0]:.1f} → "
        f"{conditions['loadavg_end'][0]:.1f} on {cpu.cpus} CPUs; {conditions['duration_s']:.0f} s"
    )
    out = args.out or RESULTS / f"eval_bench-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    import json

    out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"results in {out}")
    failed = any(
        row["llama-perplexity"]["returncode"] != 0
        for row in result.get("figures", {}).get("rows", {}).values()
    )
    return 1 if failed else 0


def _default_corpus() -> Path:
    from kaiyuan.eval import DEFAULT_CORPUS

    return DEFAULT_CORPUS


if __name__ == "__main__":
    sys.exit(main())
