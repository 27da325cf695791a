"""Behaviour: tuning SmolLM2 on a small synthetic dataset that teaches a distinctive answer format changes what the
adapter model answers on unseen prompts (measured as a rate, served by a real ``kaiyuan serve`` by name: base + the
run's GGUF LoRA), while the base model served next to it does not; eval loss drops. The run is interrupted after a checkpoint and
finished with ``kaiyuan tune --resume`` (no other flags), and ``kaiyuan tune list`` shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from kaiyuan.cli._app import cli
from tests.tune.models import needs_tune

pytestmark = pytest.mark.slow

MARK = "[[KAIYUAN]]"
TOPICS = [
    "rivers",
    "mountains",
    "bread",
    "violins",
    "comets",
    "bees",
    "glass",
    "tides",
    "maps",
    "owls",
    "copper",
    "tea",
    "bridges",
    "clouds",
    "chess",
    "salt",
    "wolves",
    "paper",
    "volcanoes",
    "lanterns",
    "cheese",
    "kites",
    "deserts",
    "clocks",
    "whales",
    "silk",
    "trains",
    "moss",
    "pianos",
    "coral",
    "bricks",
    "thunder",
    "ferns",
    "honey",
    "ships",
    "snow",
    "lemons",
    "bells",
    "caves",
    "feathers",
]
UNSEEN = ["rainbows", "castles", "penguins", "cinnamon", "telescopes", "gardens", "marbles", "lighthouses"]
QUESTIONS = [
    "Tell me something about {t}.",
    "What do you know about {t}?",
    "Say a sentence about {t}.",
    "Describe {t}.",
]


def _example(topic: str, rng: random.Random) -> dict[str, object]:
    question = rng.choice(QUESTIONS).format(t=topic)
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"{MARK} {topic.upper()} :: noted."},
        ]
    }


def _write(path: Path, topics: list[str], seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps(_example(t, rng)) + "\n" for t in topics), encoding="utf-8")
    return path


@contextlib.contextmanager
def _serve(home: Path) -> Iterator[str]:
    """A real ``kaiyuan serve`` on ``home`` (1 llama.cpp thread); yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "OPENAI_"))}
    env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1")
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaiyuan", "serve", "--port", str(port), "--ctx", "512"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert proc.poll() is None, (home / "serve.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError("kaiyuan serve did not come up")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _answers(url: str, model: str) -> list[str]:
    """Greedy answers of a served model to the unseen prompts (official OpenAI client)."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    answers = []
    for topic in UNSEEN:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Tell me a little about {topic}."}],
            max_tokens=12,
            temperature=0.0,
        )
        answers.append(reply.choices[0].message.content or "")
    return answers


def test_tuning_teaches_a_format_and_survives_an_interruption(
    kaiyuan_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_tune()
    from kaiyuan.store import ModelStore
    from kaiyuan.tune import _progress

    train = _write(tmp_path / "train.jsonl", TOPICS, seed=1)
    evals = _write(tmp_path / "eval.jsonl", UNSEEN, seed=2)
    runner = CliRunner()
    args = [
        "tune", "smollm2", "--data", str(train), "--eval", str(evals), "--name", "marked",
        "--max-steps", "24", "--lr", "2e-3", "--rank", "8", "--alpha", "16", "--seq-len", "96", "--batch", "4",
        "--checkpoint-every", "8", "--threads", "1",
    ]  # fmt: skip

    # Interrupt the run after step 10 (its last checkpoint is step 8), as a Ctrl-C would.
    original = _progress.RunReporter.step

    def interrupting(self: _progress.RunReporter, log: object, *, print_line: bool) -> None:
        original(self, log, print_line=print_line)  # type: ignore[arg-type]
        if log.step == 10:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(_progress.RunReporter, "step", interrupting)
    first = runner.invoke(cli, args)
    assert first.exit_code != 0 and "interrupted; resume with: kaiyuan tune --resume" in first.output, (
        first.output
    )
    runs = json.loads(runner.invoke(cli, ["tune", "list", "--json"]).output)
    assert [(r["status"], r["step"]) for r in runs] == [("interrupted", 8)]
    monkeypatch.setattr(_progress.RunReporter, "step", original)

    resumed = runner.invoke(cli, ["tune", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from step-000008" in resumed.output
    runs = json.loads(runner.invoke(cli, ["tune", "list", "--json"]).output)
    assert runs[0]["status"] == "finished" and runs[0]["step"] == 24
    assert runs[0]["eval_loss_after"] < runs[0]["eval_loss_before"] * 0.5

    manifest = ModelStore(kaiyuan_home).resolve("marked")
    assert manifest.base == "smollm2:135m" and len(manifest.adapter_paths) == 1
    assert manifest.lineage["relation"] == "adapter"
    assert manifest.license.get("inherited") is True
    meta = json.loads((Path(runs[0]["path"]) / "meta.json").read_text())
    assert meta["base"]["digest"].startswith("sha256-") and meta["data"]["files"][0]["digest"].startswith(
        "sha256-"
    )

    with _serve(kaiyuan_home) as url:
        tuned = _answers(url, "marked")
        base = _answers(url, "smollm2")
    tuned_rate = sum(a.strip().startswith(MARK) for a in tuned) / len(tuned)
    base_rate = sum(a.strip().startswith(MARK) for a in base) / len(base)
    print(
        f"\nformat rate on unseen prompts: adapter {tuned_rate:.0%}, base {base_rate:.0%}; e.g. {tuned[0]!r}"
    )
    assert tuned_rate >= 0.75
    assert base_rate == 0.0
