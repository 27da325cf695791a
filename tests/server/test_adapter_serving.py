"""A base model and an adapter model of it (base + GGUF LoRA) served by one real ``kaiyuan serve``: both answer at
the same time, each with its own behaviour, from one shared engine (one copy of the weights, one KV cache).

The adapter is a random-weight LoRA imported with ``kaiyuan import FILE --base smollm2``; greedy decoding makes each
model's answer a fixed string, so "its own behaviour" is checked exactly: a concurrent answer equals the answer the
same model gives alone, and the two models' answers differ.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.lora_gguf import random_lora
from tests.fixtures.tiny_gguf import smollm2_path
from tests.server.webui.harness import Server, run_kaiyuan, start_server

BASE = "smollm2:135m"
TUNED = "smollm2-tuned:latest"
TUNED_TOO = "smollm2-tuned-too:latest"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("adapter-home")
    loras = tmp_path_factory.mktemp("loras")
    run_kaiyuan(home, "import", str(random_lora(smollm2_path(), loras / "a.gguf", scale=0.2)), "--base", "smollm2",
                "--name", "smollm2-tuned")  # fmt: skip
    run_kaiyuan(home, "import", str(random_lora(smollm2_path(), loras / "b.gguf", seed=1, scale=0.2)), "--base", "smollm2",
                "--name", "smollm2-tuned-too")  # fmt: skip
    srv = start_server(home, tmp_path_factory.mktemp("adapter-log") / "serve.log", args=["--parallel", "4"])
    yield srv
    srv.stop()


def stream(server: Server, model: str, prompt: str, arrivals: list[float] | None = None) -> str:
    """A greedy streamed chat answer; ``arrivals`` gets the time each content chunk came in."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
    }
    text = []
    with httpx.stream("POST", server.url + "v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                text.append(delta)
                if arrivals is not None:
                    arrivals.append(time.monotonic())
    return "".join(text)


def concurrently(server: Server, jobs: list[tuple[str, str]]) -> tuple[list[str], list[list[float]]]:
    answers: list[str] = [""] * len(jobs)
    arrivals: list[list[float]] = [[] for _ in jobs]
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(i: int, model: str, prompt: str) -> None:
        try:
            start.wait()
            answers[i] = stream(server, model, prompt, arrivals[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    return answers, arrivals


def test_base_and_adapters_answer_at_once_each_with_its_own_behaviour(server: Server) -> None:
    prompts = {BASE: "Name a colour.", TUNED: "Name a fruit.", TUNED_TOO: "Name a city."}
    alone = {model: stream(server, model, prompt) for model, prompt in prompts.items()}
    # the reference answers of the other models for the same prompts: the adapters really change the output
    for model, prompt in prompts.items():
        others = {stream(server, other, prompt) for other in prompts if other != model}
        assert alone[model] not in others, (model, alone[model], others)

    answers, arrivals = concurrently(server, list(prompts.items()))
    assert answers == [alone[model] for model in prompts]
    # they really ran side by side: each stream's first token came before every other stream's last one
    for i, mine in enumerate(arrivals):
        for j, theirs in enumerate(arrivals):
            if i != j:
                assert mine[0] < theirs[-1], "the streams ran one after the other"

    ps = httpx.get(server.url + "kaiyuan/ps", timeout=10).json()
    loaded: Any = ps["models"] if isinstance(ps, dict) else ps
    paths = {m["name"]: m["model_path"] for m in loaded}
    assert set(paths) == set(prompts) and len(set(paths.values())) == 1
