"""A real ``kaiyuan serve`` subprocess on a free loopback port, and how the browser tests start chromium.

Owns: the chromium path and flags (Debian's chromium, never a browser Playwright downloads), starting the server
with its own KAIYUAN_HOME, one llama.cpp thread and a small context, waiting for ``/health``, reading
``/metrics``, running other ``kaiyuan`` commands against the same home (``kaiyuan import``), and stopping it.
Must not know the page.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.signals import interruptible

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "Server",
    "free_port",
    "kaiyuan_env",
    "run_kaiyuan",
    "start_server",
]

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (tests run as root in containers), and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kaiyuan_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without KAIYUAN_* and hub settings, plus ``home`` and one thread."""
    drop = ("HF_TOKEN", "HF_ENDPOINT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIYUAN_") and k not in drop}
    env.update(KAIYUAN_HOME=str(home), KAIYUAN_THREADS="1", HF_HUB_OFFLINE="1")
    env.update(extra or {})
    return env


def run_kaiyuan(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``kaiyuan ARGS`` on ``home``; fails with its output when it exits non-zero."""
    done = subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args],
        env=kaiyuan_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"kaiyuan {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


@dataclass
class Server:
    """A running ``kaiyuan serve``: its base URL (with a trailing slash), process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` on ``/metrics`` (0 when the series has no samples yet)."""
        text = httpx.get(self.url + "metrics", timeout=10).text
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)$", re.M)
        return sum(float(value) for value in pattern.findall(text))

    def wait_metric(self, name: str, want: float, timeout: float = 15) -> float:
        """Poll ``name`` until it equals ``want``; returns the last value read."""
        deadline = time.monotonic() + timeout
        value = self.metric(name)
        while value != want and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.metric(name)
        return value

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    home: Path,
    log: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ctx: int = 1024,
    timeout: float = 90,
) -> Server:
    """Start ``kaiyuan serve`` on a free 127.0.0.1 port with one thread and a ``ctx``-token context."""
    port = free_port()
    command = [
        sys.executable, "-m", "kaiyuan", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--ctx", str(ctx),
        *args,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=kaiyuan_env(home, env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=interruptible,  # stop() shuts it down with SIGINT, also from a background test run
        )
    server = Server(url=f"http://127.0.0.1:{port}/", process=process, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kaiyuan serve exited {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"kaiyuan serve did not answer /health within {timeout} s:\n{server.log_tail()}")
