"""The application a ``--print-config`` file names (``kaiyuan.cluster:build_app`` with the file's ``args``) deploys on
a Ray cluster and serves kaiyuan's surface through Ray's own HTTP proxy (``KaiyuanIngress``): what ``serve deploy``
and KubeRay run. A child process starts a loopback-only local cluster, deploys the file's application, answers
an OpenAI chat, a stream and /metrics, and shuts the cluster down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.server.test_openai_sdk_integration import free_port

from kaiyuan.cli._app import cli

pytestmark = pytest.mark.slow

CHILD = r"""
import json, sys
import httpx, yaml

if __name__ == "__main__":
    import os
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, as kaiyuan serve does (scale-out.md)
    import ray
    from ray import serve
    config = yaml.safe_load(open(sys.argv[1]))
    (app,) = config["applications"]
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options=config["http_options"], proxy_location=config["proxy_location"])
        from kaiyuan.cluster import build_app
        serve.run(build_app(app["args"]), name=app["name"], route_prefix=app["route_prefix"])
        base = f"http://127.0.0.1:{config['http_options']['port']}"
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16, "temperature": 0}
        answer = httpx.post(base + "/v1/chat/completions", json=body, timeout=300).json()
        with httpx.stream("POST", base + "/v1/chat/completions", json={**body, "stream": True}, timeout=300) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        metrics = httpx.get(base + "/metrics", timeout=30).text
        print(json.dumps({"answer": answer["choices"][0]["message"]["content"], "last": events[-1],
                          "replicas": [l for l in metrics.splitlines() if l.startswith("kaiyuan_replicas ")]}))
    finally:
        serve.shutdown()
        ray.shutdown()
"""


def test_the_config_files_application_serves_through_rays_proxy(kaiyuan_home: Path, tmp_path: Path) -> None:
    port = free_port()
    result = CliRunner().invoke(
        cli, ["serve", "--replicas", "1", "--threads", "1", "--port", str(port), "--print-config"]
    )
    assert result.exit_code == 0, result.output
    config_file = tmp_path / "kaiyuan-serve.yaml"
    config_file.write_text(result.output)
    child = tmp_path / "deploy.py"
    child.write_text(CHILD)
    run = subprocess.run(
        [sys.executable, str(child), str(config_file)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith('{"answer"')]  # Ray logs there too
    out = json.loads(line)
    assert "Paris" in out["answer"]
    assert out["last"] == "data: [DONE]"
    assert out["replicas"] == ["kaiyuan_replicas 1.0"]
