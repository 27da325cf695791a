"""Autoscaling bounds: ``kaiyuan serve --replicas 1 --min-replicas 1 --max-replicas 2`` starts one replica and Ray
Serve adds the second when more requests are in flight than one replica's target (``--parallel``)."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import openai
import pytest
from tests.cluster._support import start_cluster_server

pytestmark = pytest.mark.slow


def test_load_brings_a_second_replica_and_never_a_third(tmp_path: Path) -> None:
    servers = start_cluster_server(
        tmp_path / "home", "--replicas", "1", "--min-replicas", "1", "--max-replicas", "2", "--parallel", "2"
    )
    server = next(servers)
    try:
        assert server.metrics()["kaiyuan_replicas"][""] == 1
        oa = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)
        story = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]

        def one(_: int) -> str | None:
            return (
                oa.chat.completions.create(model="smollm2", messages=story, max_tokens=160)
                .choices[0]
                .finish_reason
            )

        seen = 1
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(24)]  # 8 in flight at a time: 4x the target of 2
            deadline = time.time() + 240
            while time.time() < deadline and seen < 2:
                seen = max(seen, int(server.metrics()["kaiyuan_replicas"][""]))
                time.sleep(2)
            finishes = [f.result() for f in futures]
        assert seen == 2, "Ray Serve did not add a replica under load"
        assert all(f in ("stop", "length") for f in finishes)
        assert server.metrics()["kaiyuan_replicas"][""] <= 2
    finally:
        servers.close()
