"""Autoscaling bounds: ``kaiyuan serve --replicas 1 --min-replicas 1 --max-replicas 2`` starts one replica, Ray
Serve adds the second when more requests are in flight than one replica's target (``--parallel``) for
``--scale-up-delay 2`` seconds, and with
``--scale-down-delay 5`` removes it again once the load is gone — a removal, not a replica lost. One cluster for
both directions: a local Ray cluster on 2 busy cores takes most of a minute to start."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import openai
import pytest
from tests.cluster._support import start_cluster_server

pytestmark = pytest.mark.slow

SCALE_DOWN_DELAY_S = 5
# Ray Serve averages requests in flight over a 30 s look-back before it decides; then the delay; then the
# replica drains and stops. Bounded well above that sum on a loaded machine.
SCALE_DOWN_TIMEOUT_S = 180


def test_load_brings_a_second_replica_never_a_third_and_idleness_takes_it_away(tmp_path: Path) -> None:
    servers = start_cluster_server(
        tmp_path / "home",
        "--replicas", "1", "--min-replicas", "1", "--max-replicas", "2", "--parallel", "2",
        "--scale-up-delay", "2", "--scale-down-delay", str(SCALE_DOWN_DELAY_S),
    )  # fmt: skip
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
            futures = [pool.submit(one, i) for i in range(48)]  # 8 in flight at a time: 4x the target of 2
            deadline = time.time() + 240
            while time.time() < deadline and seen < 2:
                seen = max(seen, int(server.metrics()["kaiyuan_replicas"][""]))
                time.sleep(1)
            for future in futures:  # the load has done its work: the requests not yet sent are not sent
                future.cancel()
            finishes = [f.result() for f in futures if not f.cancelled()]
        assert seen == 2, "Ray Serve did not add a replica under load"
        assert finishes and all(f in ("stop", "length") for f in finishes)
        assert server.metrics()["kaiyuan_replicas"][""] <= 2

        # No load: back down to the minimum, and the removed replica is not counted as lost.
        started = time.time()
        while time.time() < started + SCALE_DOWN_TIMEOUT_S and server.metrics()["kaiyuan_replicas"][""] > 1:
            time.sleep(2)
        metrics = server.metrics()
        assert metrics["kaiyuan_replicas"][""] == 1, (
            f"Ray Serve did not remove the idle replica in {SCALE_DOWN_TIMEOUT_S} s"
        )
        assert metrics.get("kaiyuan_replicas_lost_total", {}).get("", 0) == 0
        assert len(server.replica_pids()) == 1
        # The one replica left serves.
        answer = oa.chat.completions.create(model="smollm2", messages=story, max_tokens=4)
        assert answer.choices[0].finish_reason in ("stop", "length")
        print(f"scaled down {time.time() - started:.0f} s after the load ended")
    finally:
        servers.close()
