"""benchmarks/adapter_bench.py end to end at toy size: both variants run, produce every token they were asked for,
and the report prints its ratio. No timing is asserted: the figures depend on the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "adapter_bench.py"


def test_both_variants_run_and_report() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--threads", "1", "--streams", "1", "--tokens", "4", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        words[0]: words
        for words in (line.split() for line in done.stdout.splitlines())
        if len(words) == 4 and words[0] in ("shared", "separate")
    }
    assert set(rows) == {"shared", "separate"}
    assert all(float(row[1]) > 0 for row in rows.values())  # tokens/s
    assert re.search(r"shared / separate tokens/s: \d+\.\d\dx", done.stdout)
