#!/usr/bin/env python3
"""Make a synthetic step-by-step reasoning dataset (R1-style distillation format) for `kaiyuan tune`.

Each line is a chat example whose assistant message carries ``reasoning_content`` (the worked steps) and a short
``content`` (the answer). kaiyuan trains the reasoning as the model's ``<think>…</think>`` block, so the tuned model
thinks first and kaiyuan's reasoning parser splits the thinking from the answer when it is served.

    python scripts/make_reasoning_data.py --out reasoning.jsonl --n 400 --seed 0
    python scripts/make_reasoning_data.py --out reasoning-eval.jsonl --n 40 --seed 1

Problems are small arithmetic word problems with exact answers, so the steps are always correct.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ITEMS = ["apples", "books", "coins", "pencils", "stamps", "marbles", "cards", "shells"]
NAMES = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gita", "Hiro"]


def problem(rng: random.Random) -> dict[str, object]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start, bought, groups = rng.randint(3, 40), rng.randint(2, 30), rng.choice([2, 3, 4, 5])
    gave = rng.randint(1, start + bought - 1)
    total = start + bought - gave
    question = (
        f"{name} has {start} {item}, buys {bought} more and gives away {gave}. "
        f"How many {item} does {name} have left, and how many would each of {groups} friends get "
        f"if they were shared equally (ignore any remainder)?"
    )
    share, remainder = divmod(total, groups)
    steps = [
        f"Start with {start} {item}.",
        f"After buying {bought}: {start} + {bought} = {start + bought}.",
        f"After giving away {gave}: {start + bought} - {gave} = {total}.",
        f"Sharing among {groups}: {total} ÷ {groups} = {share} remainder {remainder}.",
    ]
    answer = f"{name} has {total} {item} left; each of {groups} friends would get {share}."
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, "reasoning_content": "\n".join(steps)},
        ]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--n", type=int, default=400, help="number of examples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with args.out.open("w", encoding="utf-8") as fh:
        for _ in range(args.n):
            fh.write(json.dumps(problem(rng), ensure_ascii=False) + "\n")
    print(f"wrote {args.n} examples to {args.out}")


if __name__ == "__main__":
    main()
