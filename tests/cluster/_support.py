"""Helpers for the cluster tests: a real ``kaiyuan serve --replicas N`` process (its own local Ray cluster on
127.0.0.1, one llama.cpp thread per replica), its ``/metrics`` parsed, and a teardown that leaves no Ray process.

``ClusterServer`` is the OpenAI-SDK suite's ``Server`` (``client()``, ``metric()``, ``home``, ``proc``) plus the
cluster's own views, so that suite's test bodies run against the replicas unchanged."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from tests.server.test_openai_sdk_integration import Server, free_port

START_TIMEOUT_S = 300  # a local Ray cluster plus replicas on 2 busy cores


@dataclass
class ClusterServer(Server):
    def log(self) -> str:
        return (self.home / "serve.log").read_text()

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{metric name: {label text: value}}`` of the ``kaiyuan_`` series on /metrics."""
        found: dict[str, dict[str, float]] = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            match = re.match(r"^(kaiyuan_\w+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match:
                found.setdefault(match.group(1), {})[match.group(2) or ""] = float(match.group(3))
        return found

    def per_replica(self, name: str) -> dict[str, float]:
        """``{replica id: value}`` of a per-replica series."""
        series = self.metrics().get(name, {})
        return {re.search(r'replica="([^"]+)"', k).group(1): v for k, v in series.items()}  # type: ignore[union-attr]

    def replica_pids(self) -> dict[str, int]:
        series = self.metrics().get("kaiyuan_replica_info", {})
        out = {}
        for labels in series:
            replica = re.search(r'replica="([^"]+)"', labels)
            pid = re.search(r'pid="(\d+)"', labels)
            if replica and pid:
                out[replica.group(1)] = int(pid.group(1))
        return out


def start_cluster_server(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[ClusterServer]:
    """``kaiyuan serve --replicas … ARGS`` in ``home`` (with ``env`` added to a clean environment); stopped with
    SIGTERM (drain) at the end, killed with its whole process tree if it does not stop."""
    home.mkdir(parents=True, exist_ok=True)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "OPENAI_", "OLLAMA_", "RAY_"))
    }
    clean.update(env or {})
    clean.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1")
    port = free_port()
    cmd = [sys.executable, "-m", "kaiyuan", "serve", "--port", str(port), "--threads", "1", *args]
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen(cmd, env=clean, stdout=log, stderr=subprocess.STDOUT, text=True)
    server = ClusterServer(f"http://127.0.0.1:{port}", proc, home)
    try:
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"kaiyuan serve exited {proc.returncode}: {server.log()}")
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError(
                f"kaiyuan serve --replicas did not come up in {START_TIMEOUT_S} s: {server.log()}"
            )
        yield server
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[str], timeout: float = 90) -> None:
    """SIGTERM (drain, then Ray shut down by the server itself); whatever is left of its tree is killed."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in tree:
        try:
            child.wait(timeout=10)
        except psutil.TimeoutExpired:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def leftover_ray_processes(tree: list[psutil.Process]) -> list[str]:
    """The processes of ``tree`` still alive (zombies count as gone)."""
    alive = []
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return alive
