"""A real ``kaiyuan serve`` process (bundled SmolLM2, llama.cpp, 1 thread) driven by the official ``ollama`` Python
client and LangChain's ``ChatOllama``: chat, generate, structured output, embeddings, list, show, ps, pull (from the
local hub stand-in), copy, delete, keep_alive and errors — streamed and not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import ollama
import pytest

from tests.fixtures.tiny_gguf import template_text
from tests.store.pull.hub_standin import HubStandIn

pytestmark = pytest.mark.slow

MODEL = "smollm2"
QUESTION = [{"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "num_predict": 16, "seed": 1}


@dataclass
class Server:
    url: str
    home: Path
    hub: HubStandIn

    def client(self) -> ollama.Client:
        return ollama.Client(host=self.url, timeout=120)

    def log(self) -> str:
        return (self.home / "serve.log").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def hub_with_tiny(tiny_gguf_factory: Callable[..., Path]) -> Iterator[HubStandIn]:
    """The local hub stand-in serving ``library/tiny`` (a random-weight GGUF with Qwen's chat template), which
    ``test_pull_copy_delete_and_keep_alive`` pulls."""
    tiny = tiny_gguf_factory(
        license={"id": "apache-2.0"}, chat_template=template_text("Qwen-Qwen2.5-7B-Instruct"), name="Tiny"
    ).read_bytes()
    with HubStandIn() as hub:
        hub.add_ollama("library/tiny", "latest", [("model", tiny), ("params", b'{"stop": ["<|im_end|>"]}')])
        yield hub


def hub_env(hub: HubStandIn) -> dict[str, str]:
    """The settings that send a server's pulls to ``hub`` instead of the real registries."""
    return {
        "KAIYUAN_OLLAMA_REGISTRY": hub.url,
        "KAIYUAN_HF_ENDPOINT": hub.url,
        "KAIYUAN_MODELSCOPE_ENDPOINT": hub.url,
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf_factory: Callable[..., Path]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ollama-serve-home")
    with hub_with_tiny(tiny_gguf_factory) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "OLLAMA_"))}
        env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1", **hub_env(hub))
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "kaiyuan",
            "serve",
            "--port",
            str(port),
            "--ctx",
            "1024",
            "--parallel",
            "2",
            "--max-loaded",
            "2",
        ]
        with (home / "serve.log").open("w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.time() + 120
                while True:
                    if proc.poll() is not None:
                        raise AssertionError(f"kaiyuan serve exited: {(home / 'serve.log').read_text()}")
                    try:
                        if httpx.get(url + "/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.time() > deadline:
                        raise AssertionError("kaiyuan serve did not come up in 120 s")
                    time.sleep(0.2)
                yield Server(url, home, hub)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_liveness_version_and_list(server: Server) -> None:
    assert httpx.head(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/api/version").json()["version"]
    models = server.client().list().models
    (model,) = [m for m in models if m.model == "smollm2:135m"]
    assert model.details.family == "llama" and model.details.quantization_level == "Q4_1"
    assert model.size > 90_000_000 and model.modified_at is not None and len(model.digest or "") == 64


def test_listed_names_answer_and_the_name_clients_use_is_listed(server: Server) -> None:
    client = server.client()
    names = [m.model for m in client.list().models]
    assert sorted(names) == [
        "smollm2:135m",
        "smollm2:latest",
    ]  # "smollm2" is "smollm2:latest" to Ollama clients
    for name in names:
        out = client.generate(model=name, prompt="Hi", options={"num_predict": 1})
        assert out.done and out.eval_count == 1
        assert name in [m.model for m in client.ps().models]


def test_chat_stream_matches_non_stream(server: Server) -> None:
    client = server.client()
    whole = client.chat(model=MODEL, messages=QUESTION, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.message.content and 0 < whole.eval_count <= 16 and whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration > 0
    parts = list(client.chat(model=MODEL, messages=QUESTION, options=GREEDY, stream=True))
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_stream_non_stream_and_raw(server: Server) -> None:
    client = server.client()
    whole = client.generate(model=MODEL, prompt="The sky is", options=GREEDY)
    streamed = list(client.generate(model=MODEL, prompt="The sky is", options=GREEDY, stream=True))
    assert whole.response and "".join(p.response or "" for p in streamed) == whole.response
    raw = client.generate(
        model=MODEL,
        prompt="<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        raw=True,
        options=GREEDY,
    )
    assert raw.done and raw.response


def test_structured_output_follows_the_schema(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
    }
    answer = server.client().chat(
        model=MODEL, messages=QUESTION, format=schema, options={"temperature": 0, "num_predict": 60}
    )
    jsonschema.validate(json.loads(answer.message.content), schema)
    as_json = server.client().generate(
        model=MODEL, prompt="A JSON object:", format="json", options={"temperature": 0, "num_predict": 40}
    )
    assert isinstance(json.loads(as_json.response), dict)


def test_embed_and_legacy_embeddings(server: Server) -> None:
    client = server.client()
    data = client.embed(model=MODEL, input=["red", "green"])
    assert len(data.embeddings) == 2 and len(data.embeddings[0]) == 576
    assert abs(sum(v * v for v in data.embeddings[0]) - 1) < 1e-4 and data.prompt_eval_count > 0
    legacy = client.embeddings(model=MODEL, prompt="red")
    assert legacy.embedding == pytest.approx(data.embeddings[0], abs=1e-5)


def test_show_and_ps(server: Server) -> None:
    client = server.client()
    shown = client.show(MODEL)
    assert "<|im_start|>" in shown.template and shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities and shown.details.parameter_size == "134.5M"
    running = client.ps().models
    assert [m.model for m in running] == [
        "smollm2:135m",
        "smollm2:latest",
    ]  # "smollm2", as Ollama clients say
    assert running[0].context_length == 1024
    assert running[0].expires_at is not None and running[0].size_vram == 0


def test_errors_raise_response_error(server: Server) -> None:
    client = server.client()
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=QUESTION)
    assert info.value.status_code == 404 and "model 'nope' not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        list(client.chat(model="nope", messages=QUESTION, stream=True))
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=MODEL, prompt="x", suffix="y")
    assert info.value.status_code == 400 and "suffix" in info.value.error


def test_pull_copy_delete_and_keep_alive(server: Server) -> None:
    client = server.client()
    progress = list(client.pull("tiny", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.total and p.completed == p.total and p.digest for p in progress)
    assert client.pull("tiny").status == "success"  # again: already there
    names = [m.model for m in client.list().models]
    assert "tiny:latest" in names
    out = client.generate(model="tiny", prompt="hello", options={"num_predict": 4, "temperature": 0})
    assert out.done and out.eval_count <= 4  # the pulled (random-weight) model loads and runs

    assert client.copy("tiny", "tiny-copy").status == "success"
    assert "tiny-copy:latest" in [m.model for m in client.list().models]
    assert client.delete("tiny-copy").status == "success"
    assert "tiny-copy:latest" not in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("tiny-copy")
    assert info.value.status_code == 404

    assert "tiny:latest" in [m.model for m in client.ps().models]
    unloaded = client.generate(model="tiny", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "tiny:latest" not in [m.model for m in client.ps().models]
    with pytest.raises(ollama.ResponseError) as info:
        list(client.pull("ollama://library/missing:latest", stream=True))
    assert "not found" in info.value.error


def test_async_client_streams(server: Server) -> None:
    async def scenario() -> str:
        client = ollama.AsyncClient(host=server.url, timeout=120)
        text = ""
        async for part in await client.chat(model=MODEL, messages=QUESTION, options=GREEDY, stream=True):
            text += part.message.content or ""
        return text

    assert (
        asyncio.run(scenario())
        == server.client().chat(model=MODEL, messages=QUESTION, options=GREEDY).message.content
    )


def test_langchain_chat_ollama_invoke_and_stream(server: Server) -> None:
    from langchain_ollama import ChatOllama, OllamaEmbeddings

    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=16, seed=1)
    answer = llm.invoke("Name three colours.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.response_metadata["done_reason"] in ("stop", "length")
    assert answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in llm.stream("Name three colours."))
    assert streamed == answer.content
    vectors = OllamaEmbeddings(model=MODEL, base_url=server.url).embed_documents(["red", "green"])
    assert len(vectors) == 2 and len(vectors[0]) == 576
    assert "Traceback" not in server.log()
