"""benchmarks/loop_gap_bench.py end to end, one round: the five cases run against a real ``kaiyuan serve``, the
arriving requests (plain and json_schema, cold and warm) are all answered, and the report prints its ratios. No timing is
asserted: the figures depend on the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "loop_gap_bench.py"


def test_one_round_runs_and_reports() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rounds", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "errors:" not in done.stdout, done.stdout  # every arriving request was answered
    rows = {line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")}
    assert {"alone", "plain", "schema", "long", "warm"} <= rows, done.stdout
    assert re.search(r"p99 schema / plain: \d+\.\d\dx", done.stdout)
    assert re.search(r"p50 warm / long: \d+\.\d\dx", done.stdout)
