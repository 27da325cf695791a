"""`kaiyuan run` through the real CLI and the real bundled model: one prompt, --json, errors, interactive chat."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from tests.fixtures.signals import interruptible

KAIYUAN = [sys.executable, "-m", "kaiyuan"]


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KAIYUAN, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_one_prompt_streams_a_sensible_answer() -> None:
    proc = _run(
        "run", "smollm2", "What is the capital of France?", "--temperature", "0", "--max-tokens", "24"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_json_output_has_text_and_usage() -> None:
    proc = _run("run", "smollm2", "Say hello.", "--json", "--max-tokens", "8", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["model"] == "smollm2:135m"
    assert isinstance(payload["text"], str) and payload["text"]
    assert payload["usage"]["completion_tokens"] <= 8
    assert payload["usage"]["prompt_tokens"] > 0
    assert payload["finish_reason"] in ("stop", "length")
    # the same seed gives the same answer
    again = json.loads(
        _run("run", "smollm2", "Say hello.", "--json", "--max-tokens", "8", "--seed", "7").stdout
    )
    assert again["text"] == payload["text"]


def test_system_flag_replaces_the_default_system_message() -> None:
    proc = _run(
        "run",
        "smollm2",
        "What is your name?",
        "--system",
        "Your name is Zorblax. Always say your name.",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Zorblax" in proc.stdout


def test_unknown_model_is_one_line_with_close_names() -> None:
    proc = _run("run", "smollm", "hi")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "smollm2" in lines[0]


def test_prompt_from_standard_input() -> None:
    proc = subprocess.run(
        [*KAIYUAN, "run", "smollm2", "--temperature", "0", "--max-tokens", "24"],
        input="What is the capital of France?",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


class _Terminal:
    """The CLI on a pseudo-terminal, as a person would use it."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*KAIYUAN, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=os.environ.copy(),
            preexec_fn=interruptible,  # Ctrl-C reaches it even when the tests run in a background job
        )
        os.close(slave)
        self.seen = ""

    def read_until(self, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r}; screen so far:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


@pytest.mark.slow
def test_interactive_chat_commands_and_ctrl_c_stops_only_the_answer() -> None:
    term = _Terminal("run", "smollm2", "--temperature", "0", "--max-tokens", "200")
    try:
        term.read_until(">>> Chatting with smollm2:135m")
        term.type("/?\n")
        term.read_until("/bye")
        term.type("/set system You are a pirate.\n")
        term.read_until("Set system message.")
        term.type("What is the capital of France?\n")
        term.read_until("Paris")
        term.read_until("\n>>> ")
        # a long answer, interrupted: the program stays, the answer stops. From a fresh conversation the greedy
        # story runs to --max-tokens (200 tokens, ~800 characters; after the Paris turn it ends after ~50 tokens,
        # which a busy machine can finish before the signal lands)
        term.type("/clear\n")
        term.read_until("Cleared the conversation.")
        mark = len(term.seen)
        term.type("Write a very long story about a dragon.\n")
        term.read_until("dragon.")  # the echoed line; then wait for a good part of the answer itself
        start = term.seen.index("dragon.", mark) + len("dragon.\r\n")
        deadline = time.monotonic() + 120
        while len(term.seen) < start + 40 and time.monotonic() < deadline:
            ready, _, _ = select.select([term.master], [], [], 0.5)
            if ready:
                term.seen += os.read(term.master, 4096).decode(errors="replace")
        term.proc.send_signal(signal.SIGINT)
        term.read_until("answer stopped")
        term.type("/clear\n")
        term.read_until("Cleared the conversation.")
        assert term.proc.poll() is None
        term.type("/bye\n")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
