"""``kaiyuan serve --replicas 2`` as a real process (a local Ray cluster on 127.0.0.1, the bundled SmolLM2, one
llama.cpp thread per replica), one per module: the OpenAI-SDK and ollama-client suites that run against
``kaiyuan serve`` (tests/server/), their very test bodies, against it; prefix-affinity routing, the cluster's series
on /metrics, and failover when a replica's process is killed."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from tests.cluster._support import ClusterServer, start_cluster_server
from tests.server import test_ollama_client_integration as ollama_suite
from tests.server import test_openai_sdk_integration as openai_suite
from tests.store.pull.hub_standin import HubStandIn

pytestmark = pytest.mark.slow

MODEL = "smollm2"

# The two suites' test bodies, collected here against the replicas (issue 13: a request cannot tell which way it
# was served). Each suite runs in its own order, the OpenAI suite first: its server is module-scoped in both, and
# the Ollama suite's pull test adds a model that the OpenAI suite's listings would show.
test_startup_prints_the_url_and_health = openai_suite.test_startup_prints_the_url_and_health
test_models_list = openai_suite.test_models_list
test_every_listed_id_answers_and_the_ids_clients_use_are_listed = (
    openai_suite.test_every_listed_id_answers_and_the_ids_clients_use_are_listed
)
test_stream_with_usage_matches_non_stream_at_temperature_zero = (
    openai_suite.test_stream_with_usage_matches_non_stream_at_temperature_zero
)
test_n_two_with_seed_reproduces = openai_suite.test_n_two_with_seed_reproduces
test_temperature_zero_is_deterministic = openai_suite.test_temperature_zero_is_deterministic
test_logprobs = openai_suite.test_logprobs
test_stop_string_across_token_boundary = openai_suite.test_stop_string_across_token_boundary
test_json_schema_output_validates = openai_suite.test_json_schema_output_validates
test_embeddings_float_and_base64 = openai_suite.test_embeddings_float_and_base64
test_legacy_completion = openai_suite.test_legacy_completion
test_error_cases = openai_suite.test_error_cases
test_eight_concurrent_streams_complete = openai_suite.test_eight_concurrent_streams_complete
test_disconnect_frees_the_slot = openai_suite.test_disconnect_frees_the_slot
test_ps_command_asks_the_server = openai_suite.test_ps_command_asks_the_server
test_liveness_version_and_list = ollama_suite.test_liveness_version_and_list
test_listed_names_answer_and_the_name_clients_use_is_listed = (
    ollama_suite.test_listed_names_answer_and_the_name_clients_use_is_listed
)
test_chat_stream_matches_non_stream = ollama_suite.test_chat_stream_matches_non_stream
test_generate_stream_non_stream_and_raw = ollama_suite.test_generate_stream_non_stream_and_raw
test_structured_output_follows_the_schema = ollama_suite.test_structured_output_follows_the_schema
test_embed_and_legacy_embeddings = ollama_suite.test_embed_and_legacy_embeddings
test_show_and_ps = ollama_suite.test_show_and_ps
test_errors_raise_response_error = ollama_suite.test_errors_raise_response_error
test_pull_copy_delete_and_keep_alive = ollama_suite.test_pull_copy_delete_and_keep_alive
test_async_client_streams = ollama_suite.test_async_client_streams
test_langchain_chat_ollama_invoke_and_stream = ollama_suite.test_langchain_chat_ollama_invoke_and_stream

# Left out, and why (test_every_body_of_both_suites_runs_here keeps this list and the one above complete):
LEFT_OUT = {
    # it starts a server of its own (an API key, one slot, a queue of two), so here it would not touch the
    # replicas; a second cluster in that configuration would add a minute to every run
    "test_auth_and_overload_recovery",
}


@pytest.fixture(scope="module")
def hub(tiny_gguf_factory: Callable[..., Path]) -> Iterator[HubStandIn]:
    with ollama_suite.hub_with_tiny(tiny_gguf_factory) as hub:
        yield hub


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, hub: HubStandIn) -> Iterator[ClusterServer]:
    """The one cluster of this module (starting one takes about a minute here), set up as the two suites' servers
    are: a 1024-token window (their errors and /api/ps say so), 4 slots in all (2 per replica; ``kaiyuan ps``
    reports the total), a queue of 8 per replica, two models held (the pulled ``tiny`` beside SmolLM2), and pulls
    from the hub stand-in."""
    yield from start_cluster_server(
        tmp_path_factory.mktemp("cluster-home"),
        "--replicas", "2", "--parallel", "2", "--max-queue", "8", "--max-loaded", "2", "--ctx", "1024",
        env=ollama_suite.hub_env(hub),
    )  # fmt: skip


@pytest.fixture
def server(
    cluster: ClusterServer, hub: HubStandIn, request: pytest.FixtureRequest
) -> ClusterServer | ollama_suite.Server:
    """The cluster as each test knows its server: the Ollama suite's bodies get that suite's ``Server`` (whose
    ``client()`` is an ``ollama.Client``); the OpenAI suite's bodies and this module's tests the ``ClusterServer``
    (the OpenAI suite's ``Server`` and more)."""
    if request.function.__module__ == ollama_suite.__name__:
        return ollama_suite.Server(cluster.url, cluster.home, hub)
    return cluster


def test_every_body_of_both_suites_runs_here() -> None:
    bodies = {
        name: body
        for suite in (openai_suite, ollama_suite)
        for name, body in vars(suite).items()
        if name.startswith("test_")
    }
    assert {name for name, body in bodies.items() if globals().get(name) is not body} == LEFT_OUT


# -- the API surface, unchanged ------------------------------------------------------------------------------


def test_startup_says_where_the_replicas_run(server: ClusterServer) -> None:
    output = server.log()
    assert f"kaiyuan serving smollm2:135m on {server.url}" in output
    assert "replicas:    2 on a local Ray cluster (127.0.0.1)" in output and "Traceback" not in output
    assert server.metrics()["kaiyuan_replicas"][""] == 2


def test_the_cluster_listens_on_loopback_only(server: ClusterServer) -> None:
    """Every listening socket of the server and its Ray processes is on 127.0.0.1 — except the inter-deployment
    gRPC port Ray Serve 2.60 opens in each replica on ``[::]`` (hard-coded; token-authenticated by Ray)."""
    tree = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
    wide = []
    for proc in tree:
        try:
            sockets = proc.net_connections(kind="tcp")
            name = " ".join(proc.cmdline())[:60]
        except psutil.NoSuchProcess:
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN and sock.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1"):
                wide.append((name, sock.laddr.ip))
    assert wide and all(name.startswith("ray::ServeReplica") and ip == "::" for name, ip in wide), wide


# -- routing ---------------------------------------------------------------------------------------------------


def _ttft(server: ClusterServer, system: str, question: str) -> tuple[float, int]:
    """(seconds to the first content token, cached prompt tokens) of one streamed request."""
    start = time.perf_counter()
    first = None
    cached = -1
    stream = server.client(timeout=240).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            cached = chunk.usage.prompt_tokens_details.cached_tokens
    assert first is not None
    return first, cached


def test_a_shared_long_prefix_goes_to_the_replica_that_holds_it(server: ClusterServer) -> None:
    # ~840 tokens with the template: long enough to route by, short enough for the 1024-token window
    system = " ".join(f"Rule {i}: answer briefly, politely and mention the number {i}." for i in range(50))
    before_prompt = server.per_replica("kaiyuan_replica_prompt_tokens_total")
    before_routed = server.metrics()["kaiyuan_routed_requests_total"]
    cold, cold_cached = _ttft(server, system, "Hi!")
    after_cold = server.per_replica("kaiyuan_replica_prompt_tokens_total")
    (holder,) = [r for r, v in after_cold.items() if v - before_prompt.get(r, 0) > 700]
    warm, warm_cached = _ttft(server, system, "Who are you?")
    time.sleep(2.5)  # replicas report their figures every second
    after_warm = server.per_replica("kaiyuan_replica_prompt_tokens_total")
    grew = {r for r, v in after_warm.items() if v > after_cold.get(r, 0)}
    assert grew == {holder}  # the second request ran where the first left its prefix
    routed = server.metrics()["kaiyuan_routed_requests_total"]
    assert routed['{policy="prefix"}'] == before_routed['{policy="prefix"}'] + 1
    assert cold_cached < 100 and warm_cached > 700  # the warm one reused the cached system prompt
    # ~840 prompt tokens prefilled cold vs a dozen warm: measured ~0.01x at 1,100 tokens, so 0.1x has a wide margin
    assert warm <= 0.1 * cold, (warm, cold)


def test_different_prefixes_spread_over_both_replicas(server: ClusterServer) -> None:
    before = server.per_replica("kaiyuan_replica_prompt_tokens_total")
    systems = [f"You are assistant number {i}. " + f"Topic {i} " * (60 + 10 * i) for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: _ttft(server, s, "Hello"), systems))
    time.sleep(2.5)
    after = server.per_replica("kaiyuan_replica_prompt_tokens_total")
    assert len(after) == 2 and all(after[r] > before.get(r, 0) for r in after)


# -- failover --------------------------------------------------------------------------------------------------


def _one_stream(server: ClusterServer, i: int) -> str:
    """'ok' or 'error: …' for one streamed request; a hang fails on the client's timeout."""
    try:
        stream = server.client(timeout=120).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell me a short story about the number {i}."}],
            max_tokens=32,
            stream=True,
        )
        finishes = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
        return "ok" if finishes else "error: no finish_reason"
    except openai.APIError as exc:
        return f"error: {exc}"


def test_failover_when_a_replica_process_dies(server: ClusterServer) -> None:
    pids = server.replica_pids()
    assert len(pids) == 2
    victim_replica, victim_pid = sorted(pids.items())[0]
    started = threading.Event()
    outcomes: list[str] = []

    def run(i: int) -> str:
        if i >= 8:
            started.set()
        return _one_stream(server, i)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(run, i) for i in range(40)]
        assert started.wait(300)
        os.kill(victim_pid, signal.SIGKILL)
        for future in concurrent.futures.as_completed(futures, timeout=600):
            outcomes.append(future.result())
    errors = [o for o in outcomes if o != "ok"]
    assert len(outcomes) == 40
    assert all("replica" in e for e in errors), errors  # a cut stream says why, in the stream
    assert len(errors) <= 8  # only streams that were running on the dead replica can be cut

    # new requests succeed at once: the router stops sending to the dead replica
    for i in range(3):
        assert _one_stream(server, 100 + i) == "ok"

    deadline = time.time() + 300  # Ray starts a replacement replica
    while time.time() < deadline:
        now = server.replica_pids()
        if len(now) == 2 and victim_replica not in now and victim_pid not in now.values():
            break
        time.sleep(2)
    else:
        raise AssertionError(f"no replacement replica: {server.replica_pids()}")
    assert server.metrics()["kaiyuan_replicas_lost_total"][""] >= 1
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


# -- unloading -------------------------------------------------------------------------------------------------


def test_keep_alive_zero_frees_the_models_on_every_replica(server: ClusterServer) -> None:
    """As on one server, ``keep_alive: 0`` unloads a model: the replicas close its engine too (their memory is
    freed), and the next request loads it again."""
    assert httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                      "options": {"num_predict": 2}}, timeout=120).status_code == 200  # fmt: skip
    assert all(n >= 1 for n in server.per_replica("kaiyuan_replica_models_loaded").values())
    for model in httpx.get(server.url + "/api/ps", timeout=10).json()["models"]:
        unload = httpx.post(
            server.url + "/api/generate", json={"model": model["name"], "keep_alive": 0}, timeout=60
        )
        assert unload.status_code == 200 and unload.json()["done_reason"] == "unload", unload.text
    assert httpx.get(server.url + "/api/ps", timeout=10).json()["models"] == []

    deadline = time.time() + 60  # the replicas report every second
    while time.time() < deadline:
        loaded = server.per_replica("kaiyuan_replica_models_loaded")
        if len(loaded) == 2 and not any(loaded.values()):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"model files still loaded on the replicas: {loaded}")
    assert _one_stream(server, 200) == "ok"  # loaded again on first use
