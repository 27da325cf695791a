"""``kaiyuan serve`` and ``kaiyuan ps`` failures a user meets before any request: a busy port, an unknown model,
no server to ask. (The running server is exercised in tests/server/test_openai_sdk_integration.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys

from click.testing import CliRunner

from kaiyuan.cli._app import cli


def kaiyuan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args], capture_output=True, text=True, timeout=120
    )


def test_serve_help_lists_the_flags() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--parallel",
        "--ctx",
        "--threads",
        "--max-queue",
        "--max-loaded",
        "--api-key",
    ):
        assert flag in result.output


def test_serve_on_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = kaiyuan("serve", "--port", str(port))
    assert proc.returncode == 2
    assert f"port {port}" in proc.stderr and "--port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_unknown_model_fails_before_serving() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = kaiyuan("serve", "smollm3", "--port", str(port))
    assert proc.returncode == 1
    assert "smollm3" in proc.stderr and "smollm2" in proc.stderr  # the close name is suggested
    assert "Traceback" not in proc.stderr and "kaiyuan serving" not in proc.stdout


def test_ps_without_a_server_says_how_to_start_one() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = kaiyuan("ps", "--port", str(port))
    assert proc.returncode == 1
    assert "kaiyuan serve" in proc.stderr and "Traceback" not in proc.stderr
