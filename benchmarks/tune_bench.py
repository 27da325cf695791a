#!/usr/bin/env python3
"""kaiyuan tune vs a plain transformers Trainer + PEFT loop: same base, data and settings, side by side.

Each contestant runs in its own process (so peak RSS is its own): ``kaiyuan tune`` (without and with ``--packing``)
and a Hugging Face ``Trainer`` on a PEFT LoRA model with the same rank/alpha/targets, batch size, sequence length,
learning rate and number of optimizer steps, on the same chat data rendered with the same template. Throughput is
real (non-padding) tokens through forward+backward per second of training (model loading excluded).

    python benchmarks/tune_bench.py --steps 12 --batch 4 --seq-len 512 --threads 2                # uneven data
    python benchmarks/tune_bench.py --data reasoning --steps 12 --batch 4 --seq-len 256 --threads 2

Two datasets. ``uneven`` (default) is chat data whose lengths follow the heavy-tailed shape of real instruction sets
(log-normal, a few dozen to several hundred tokens; the run prints min/median/max): the data packing is for, since a
padded micro-batch is as wide as its longest example. ``reasoning`` is the R1-style distillation set of
scripts/make_reasoning_data.py, whose examples all have nearly the same length: packing can win nothing there, and
the run shows that it costs nothing either.

Prints a table and the tokens/s ratios (goal: kaiyuan >= 1.0x the Trainer, >= 1.5x with packing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._serve_peers import bundled_model  # noqa: E402


def make_data(path: Path, n: int, seed: int) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_reasoning_data.py"),
            "--out",
            str(path),
            "--n",
            str(n),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
    )


TOPICS = ["rivers", "bread", "comets", "glass", "tides", "copper", "bridges", "chess", "wolves", "lanterns", "kites",
          "clocks", "silk", "trains", "coral", "ferns", "honey", "bells", "caves", "maps"]  # fmt: skip
_TEXT = """the a of and to in is it that for on with as by at from this which are be or an was its can more their
water light stone time people world small large old new early often many most used made long great across under
between through during after before because while where"""
WORDS = _TEXT.split()


def make_uneven_data(path: Path, n: int, seed: int) -> None:
    """Chat examples whose answer lengths are log-normal (median ~60 words, a long tail to ~600), like real
    instruction data: most answers are short, a few are very long."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(n):
            words = min(600, max(8, int(rng.lognormvariate(4.1, 0.9))))
            topic = rng.choice(TOPICS)
            answer = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
            question = f"Tell me about {topic} in about {words} words."
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            out.write(json.dumps({"messages": messages}) + "\n")


def run_kaiyuan(args: argparse.Namespace, data: Path, packing: bool) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="kaiyuan-bench-"))
    env = {**os.environ, "KAIYUAN_HOME": str(home), "KAIYUAN_THREADS": str(args.threads)}
    cmd = [
        sys.executable, "-m", "kaiyuan", "tune", "smollm2", "--data", str(data), "--name", "bench",
        "--max-steps", str(args.steps), "--batch", str(args.batch), "--seq-len", str(args.seq_len),
        "--rank", "16", "--alpha", "32", "--lr", "2e-4", "--eval-split", "0", "--dropout", "0.05",
        "--checkpoint-every", "0", "--threads", str(args.threads),
        "--packing" if packing else "--no-packing",
    ]  # fmt: skip
    child = _measure(cmd, env)
    meta = json.loads(next((home / "runs").iterdir()).joinpath("meta.json").read_text())
    return {
        "tokens_per_s": float(meta["tokens_per_s"]),
        "peak_rss_mb": child["peak_rss_mb"],
        "wall_s": child["wall_s"],
    }


def run_trainer(args: argparse.Namespace, data: Path, group_by_length: bool = False) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="trainer-bench-")) / "result.json"
    cmd = [sys.executable, __file__, "--trainer-child", str(data), str(out), str(args.steps), str(args.batch),
           str(args.seq_len), str(args.threads), "group" if group_by_length else "plain"]  # fmt: skip
    child = _measure(cmd, dict(os.environ))
    result = json.loads(out.read_text())
    return {
        "tokens_per_s": result["tokens_per_s"],
        "peak_rss_mb": child["peak_rss_mb"],
        "wall_s": child["wall_s"],
    }


def _measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a child to completion; its peak RSS comes from wait4's rusage (this child only)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves to get this child's own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(output[-4000:])
        raise SystemExit(f"{cmd[2:4]} failed with {proc.returncode}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start}


def trainer_child(
    data: str, out: str, steps: str, batch: str, seq_len: str, threads: str, order: str
) -> None:
    """The baseline: transformers Trainer + PEFT, assistant-only labels made the usual way (HF chat template)."""
    import warnings

    warnings.simplefilter("ignore")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    torch.set_num_threads(int(threads))
    gguf = bundled_model()
    tok = _smollm2_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF weights are dequantized to float32; drop the "quantized" marker so Trainer accepts the model.
    model.is_quantized = False
    model.hf_quantizer = None
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets))
    rows = []
    for line in Path(data).read_text().splitlines():
        messages = _with_think(json.loads(line)["messages"])
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages, tokenize=False)
        ids = tok(full, add_special_tokens=False)["input_ids"][: int(seq_len)]
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * n_prompt + ids[n_prompt:]}
        )
    tokens_seen = [0]

    class Collator(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):  # type: ignore[no-untyped-def]
            tokens_seen[0] += sum(len(f["input_ids"]) for f in features)
            return super().__call__(features, return_tensors)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(Path(out).parent / "trainer"),
            per_device_train_batch_size=int(batch),
            max_steps=int(steps),
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, int(0.05 * int(steps))),
            logging_steps=1000,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if order == "group" else "random",
        ),
        train_dataset=rows,
        data_collator=Collator(tok, padding=True, label_pad_token_id=-100),
    )
    metrics = trainer.train().metrics
    Path(out).write_text(json.dumps({"tokens_per_s": tokens_seen[0] / metrics["train_runtime"]}))


def _smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    gguf = bundled_model()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _token_lengths(data: Path) -> list[int]:
    tok = _smollm2_tokenizer()
    return [
        len(
            tok(tok.apply_chat_template(_with_think(json.loads(line)["messages"]), tokenize=False))[
                "input_ids"
            ]
        )
        for line in data.read_text().splitlines()
    ]


def _with_think(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same think block kaiyuan trains, written into the content for the HF chat template."""
    for m in messages:
        if m.get("reasoning_content"):
            m["content"] = f"<think>\n{m.pop('reasoning_content')}\n</think>\n\n{m['content']}"
    return messages


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--trainer-child":
        trainer_child(*sys.argv[2:9])
        return
    parser = argparse.ArgumentParser(description="kaiyuan tune vs transformers Trainer + PEFT")
    parser.add_argument("--data", choices=["uneven", "reasoning"], default="uneven")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tune-bench-data-")) / "train.jsonl"
    if args.data == "uneven":
        make_uneven_data(data, args.examples, seed=0)
    else:
        make_data(data, args.examples, seed=0)
    lengths = sorted(_token_lengths(data))
    print(f"SmolLM2-135M (Q4_1 GGUF, dequantized), LoRA r=16 on 7 projections, {args.steps} steps x batch "
          f"{args.batch}, seq-len {args.seq_len}, {args.threads} threads")  # fmt: skip
    print(f"data: {args.data}, {len(lengths)} examples of {lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]} "
          "tokens (min/median/max)")  # fmt: skip
    results = {
        "transformers Trainer + PEFT": run_trainer(args, data),
        "Trainer, group_by_length": run_trainer(args, data, group_by_length=True),
        "kaiyuan tune": run_kaiyuan(args, data, packing=False),
        "kaiyuan tune --packing": run_kaiyuan(args, data, packing=True),
    }
    base = results["transformers Trainer + PEFT"]["tokens_per_s"]
    print(f"{'':30} {'tokens/s':>10} {'ratio':>7} {'peak RSS MB':>12} {'wall s':>8}")
    for name, r in results.items():
        print(
            f"{name:30} {r['tokens_per_s']:10.1f} {r['tokens_per_s'] / base:6.2f}x {r['peak_rss_mb']:12.0f} {r['wall_s']:8.1f}"
        )


if __name__ == "__main__":
    main()
