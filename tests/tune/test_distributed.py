"""Data parallelism through torchrun: two CPU processes (gloo) make one run — one run folder, one registered
adapter, rank 0 writing everything — with the micro-batches split between the ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tune.models import needs_tune

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_make_one_run(kaiyuan_home: Path, tmp_path: Path) -> None:
    needs_tune()
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Count to {n}."},
                                     {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))}]})
            + "\n"
            for n in range(2, 10)
        ),
        encoding="utf-8",
    )  # fmt: skip
    env = {**os.environ, "KAIYUAN_HOME": str(kaiyuan_home), "KAIYUAN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "kaiyuan", "tune", "smollm2", "--data", str(data), "--name", "ddp", "--max-steps", "3",
         "--seq-len", "64", "--batch", "2", "--eval-split", "0", "--threads", "1", "--log-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers: nothing is left behind
        proc.communicate()
        raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((kaiyuan_home / "runs").iterdir())
    assert len(runs) == 1
    meta = json.loads((runs[0] / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["world_size"] == 2 and meta["registered"] == "ddp:latest"
    steps = [json.loads(line) for line in (runs[0] / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if s["event"] == "step"] == [1, 2, 3]  # rank 0 logs once per step
    assert result.stdout.count("ddp:latest: 3 steps") == 1
