"""A real ``kaiyuan serve`` process on the bundled SmolLM2 (llama.cpp, 1 thread), driven by the official ``openai``
SDK: streaming with usage, n=2, logprobs, stop strings across token boundaries, seeds, json_schema, embeddings,
legacy completions, every error case, concurrent streams, overload and disconnects, and ``kaiyuan ps``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2"
QUESTION = [{"role": "user", "content": "Name three colours."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    home: Path
    api_key: str | None = None

    def client(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, **kw)

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))


def start_server(
    home: Path, *args: str, api_key: str | None = None, ready_timeout: float = 120
) -> Iterator[Server]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "OPENAI_"))}
    env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1")
    if api_key:
        env["KAIYUAN_API_KEY"] = api_key
    port = free_port()
    cmd = [sys.executable, "-m", "kaiyuan", "serve", "--port", str(port), "--ctx", "1024", *args]
    log = (home / "serve.log").open("w")
    # its own process group: engine processes it starts (vLLM's engine core) go with it when it is killed
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + ready_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"kaiyuan serve exited {proc.returncode}: {(home / 'serve.log').read_text()}"
            )
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        _kill_group(proc)
        raise AssertionError(f"kaiyuan serve did not come up in {ready_timeout:.0f} s")
    try:
        yield Server(url, proc, home, api_key)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        _kill_group(proc)  # whatever of the group is left (a killed server's engine processes)
        log.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("serve-home"), "--parallel", "4", "--max-queue", "8")


def test_startup_prints_the_url_and_health(server: Server) -> None:
    output = (server.home / "serve.log").read_text()
    assert f"kaiyuan serving smollm2:135m on {server.url}" in output and f"{server.url}/v1" in output
    assert "Traceback" not in output
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models_loaded"] == 1  # the bundled model was preloaded


def test_models_list(server: Server) -> None:
    models = server.client().models.list()
    model, *aliases = models.data
    assert model.id == "smollm2:135m" and model.owned_by == "kaiyuan"
    assert model.model_extra["license"]["id"] == "apache-2.0"
    assert [(a.id, a.model_extra["alias_of"]) for a in aliases] == [
        ("smollm2:latest", "smollm2:135m"),
        ("smollm2", "smollm2:135m"),
    ]


def test_every_listed_id_answers_and_the_ids_clients_use_are_listed(server: Server) -> None:
    client = server.client()
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids  # the name this module (and the README) uses
    for model_id in ids:
        assert client.models.retrieve(model_id).id == model_id
        out = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=1)
        assert out.choices[0].finish_reason == "length"


def test_stream_with_usage_matches_non_stream_at_temperature_zero(server: Server) -> None:
    client = server.client()
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content and text
    assert finishes == [whole.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (
        usage.completion_tokens == whole.usage.completion_tokens
        and usage.prompt_tokens == whole.usage.prompt_tokens
    )
    assert (
        usage.prompt_tokens_details.cached_tokens > 0
    )  # the same prompt again: served from the prefix cache
    assert all(c.usage is None for c in chunks[:-1])


def test_n_two_with_seed_reproduces(server: Server) -> None:
    client = server.client()
    kw = dict(model=MODEL, messages=QUESTION, n=2, temperature=1.0, seed=1234, max_tokens=16)
    first = client.chat.completions.create(**kw)
    second = client.chat.completions.create(**kw)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert all(c.message.content for c in first.choices)
    assert first.usage.completion_tokens <= 2 * 16


def test_temperature_zero_is_deterministic(server: Server) -> None:
    client = server.client()
    answers = {
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=16)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(answers) == 1


def test_logprobs(server: Server) -> None:
    resp = server.client().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    assert "".join(t.token for t in content) == resp.choices[0].message.content
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(item.logprob, item.top_logprobs[0].logprob, abs_tol=1e-4)


def test_stop_string_across_token_boundary(server: Server) -> None:
    client = server.client()
    base = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, logprobs=True
    )
    tokens = [t.token for t in base.choices[0].logprobs.content]
    # a stop string made of the end of one token and the start of the next
    i = next(
        i
        for i in range(1, len(tokens) - 1)
        if len(tokens[i].strip()) >= 2 and len(tokens[i + 1].strip()) >= 2
    )
    stop = tokens[i][-2:] + tokens[i + 1][:2]
    text = "".join(tokens)
    expected = text[: text.index(stop)]
    resp = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stop=[stop]
    )
    assert resp.choices[0].message.content == expected
    assert resp.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stop=stop, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == expected and stop not in streamed


def test_json_schema_output_validates(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        },
        "required": ["name", "age", "colours"],
        "additionalProperties": False,
    }
    resp = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=80,
        temperature=0.7,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    data = json.loads(resp.choices[0].message.content or "")
    jsonschema.validate(data, schema)
    assert resp.choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64(server: Server) -> None:
    client = server.client()
    b64 = client.embeddings.create(model=MODEL, input=["hello world", "goodbye"])  # the SDK asks for base64
    floats = client.embeddings.create(model=MODEL, input=["hello world", "goodbye"], encoding_format="float")
    assert len(b64.data) == 2 and len(b64.data[0].embedding) == len(floats.data[0].embedding) > 100
    for a, b in zip(b64.data[0].embedding, floats.data[0].embedding, strict=True):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    assert floats.usage.prompt_tokens > 0


def test_legacy_completion(server: Server) -> None:
    resp = server.client().completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2
    )
    choice = resp.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert "".join(choice.logprobs.tokens) == choice.text and len(choice.logprobs.top_logprobs[0]) == 2


def test_error_cases(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 2000}])
    assert long.value.code == "context_length_exceeded" and "1024" in long.value.message
    with pytest.raises(openai.BadRequestError) as vision:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
                }
            ],
        )
    assert "vision" in vision.value.message
    raw = httpx.post(
        server.url + "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and "Traceback" not in raw.text


def test_eight_concurrent_streams_complete(server: Server) -> None:
    client = server.client()

    def one(i: int) -> tuple[str, str | None]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell me about the number {i}."}],
            max_tokens=16,
            temperature=0.7,
            seed=i,
            stream=True,
        )
        text, finish = "", None
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(text and finish in ("stop", "length") for text, finish in results)


def test_disconnect_frees_the_slot(server: Server) -> None:
    # SmolLM2's end tokens (<|endoftext|> 0, <|im_end|> 2) are banned so the answer runs until the client leaves
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 900,
        "stream": True,
        "logit_bias": {"0": -100, "2": -100},
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server.url + "/v1/chat/completions", json=body) as resp,
    ):
        lines = resp.iter_lines()  # kept referenced: dropping the generator would close the connection early
        assert sum(1 for _, line in zip(range(6), lines, strict=False) if line) == 3
        assert server.metric("kaiyuan_requests_running") == 1
        resp.close()  # the client goes away mid-stream
    deadline = time.time() + 10
    while server.metric("kaiyuan_requests_running") > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert server.metric("kaiyuan_requests_running") == 0
    assert time.time() < deadline


def test_ps_command_asks_the_server(server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIYUAN_")}
    env["KAIYUAN_HOME"] = str(server.home)
    out = subprocess.run(
        [sys.executable, "-m", "kaiyuan", "ps", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "smollm2:135m" in out and "NAME" in out
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "kaiyuan", "ps", "--port", port, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert data[0]["name"] == "smollm2:135m" and data[0]["slots"] == 4


def test_auth_and_overload_recovery(tmp_path: Path) -> None:
    gen = start_server(tmp_path / "home", "--parallel", "1", "--max-queue", "2", api_key="sekrit")
    srv = next(gen)
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(srv.url + "/health").status_code == 200

        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
        headers = {"Authorization": "Bearer sekrit"}

        def hit(_: int) -> tuple[int, str | None]:
            resp = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
            return resp.status_code, resp.headers.get("retry-after")

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(hit, range(32)))
        statuses = [s for s, _ in results]
        assert set(statuses) <= {200, 429, 503}, statuses
        assert 200 in statuses and any(s in (429, 503) for s in statuses)
        assert all(retry and int(retry) >= 1 for s, retry in results if s != 200)
        # recovered: the queue drained, a new request succeeds
        deadline = time.time() + 30
        while (
            srv.metric("kaiyuan_requests_waiting") + srv.metric("kaiyuan_requests_running") > 0
            and time.time() < deadline
        ):
            time.sleep(0.2)
        ok = srv.client().chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
        assert ok.choices[0].message.content is not None
    finally:
        gen.close()
