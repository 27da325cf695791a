"""Graceful drain of ``kaiyuan serve --replicas 1``: on SIGTERM the streams in flight run to their end, new requests
get 503 with Retry-After (in each skin's envelope), then the server and its local Ray cluster stop, leaving no
process behind."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from tests.cluster._support import leftover_ray_processes, start_cluster_server

pytestmark = pytest.mark.slow

COUNT = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]


def test_sigterm_lets_streams_finish_and_refuses_new_requests(tmp_path: Path) -> None:
    servers = start_cluster_server(
        tmp_path / "home", "--replicas", "1", "--parallel", "4", "--drain-timeout", "120"
    )
    server = next(servers)
    try:
        tree = psutil.Process(server.proc.pid).children(recursive=True)
        oa = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
        started = [threading.Event() for _ in range(3)]
        results: dict[int, tuple[str, str | None]] = {}

        def stream(i: int) -> None:
            text, finish = "", None
            try:
                for chunk in oa.chat.completions.create(
                    model="smollm2", messages=COUNT, temperature=0, max_tokens=48, stream=True
                ):
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                        if text:
                            started[i].set()
                results[i] = (text, finish)
            except openai.APIError as exc:
                results[i] = (f"error: {exc}", None)
                started[i].set()

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        assert all(event.wait(300) for event in started)
        server.proc.send_signal(signal.SIGTERM)

        deadline = time.time() + 30
        while httpx.get(server.url + "/health", timeout=10).status_code != 503:
            assert time.time() < deadline, "the server did not start draining"
            time.sleep(0.1)
        refused = httpx.post(
            server.url + "/v1/chat/completions", json={"model": "smollm2", "messages": COUNT}
        )
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["code"] == "draining"
        refused = httpx.post(server.url + "/api/chat", json={"model": "smollm2", "messages": COUNT})
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]

        for t in threads:
            t.join(300)
        assert sorted(results) == [0, 1, 2]
        for text, finish in results.values():
            assert finish in ("length", "stop"), text  # every stream ran to its own end, none was cut
            assert text.startswith("1, 2, 3")

        assert server.proc.wait(timeout=120) == 0
        time.sleep(2)
        assert leftover_ray_processes(tree) == []
        assert "draining 3 request(s)" in server.log()
    finally:
        servers.close()
